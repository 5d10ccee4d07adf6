//! The server boundary, spoken to with a raw WebSocket client: bad input of
//! every kind gets its typed error (or closes only its own connection),
//! writes nothing, and never disturbs a well-behaved client.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use futures_util::{SinkExt, StreamExt};
use kvlite_api::{Error, FenceReason, OpenResponse};
use kvlite_kv::Kv;
use kvlite_proto::msg::{ClientMessage, Page, Request, Response};
use kvlite_server::Tokens;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const ALPHA: &str = "alpha-token-0123456789";
const BETA: &str = "beta-token-0123456789";
const ALPHA_ADMIN: &str = "alpha-admin-token-0123456789";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn raw(server: &TestServer, token: Option<&str>) -> Result<Ws, WsError> {
    let mut req = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .expect("request");
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// Connect and complete the handshake at `version`.
async fn client(server: &TestServer, token: Option<&str>, version: u16) -> Ws {
    let mut ws = raw(server, token).await.expect("connect");
    ws.send(Message::Binary(
        kvlite_proto::encode_hello(&[version])
            .expect("hello")
            .into(),
    ))
    .await
    .expect("send");
    let reply = next_binary(&mut ws).await.expect("hello reply");
    assert_eq!(
        kvlite_proto::decode_hello_reply(&reply).expect("reply"),
        kvlite_proto::HelloReply::Accepted { version }
    );
    ws
}

async fn next_binary(ws: &mut Ws) -> Option<Vec<u8>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .ok()??
        {
            Ok(Message::Binary(b)) => return Some(b.to_vec()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn send(ws: &mut Ws, version: u16, request_id: u64, request: Request) {
    let bytes = kvlite_proto::encode_request(
        version,
        &ClientMessage {
            request_id,
            request,
        },
    )
    .expect("encode");
    ws.send(Message::Binary(bytes.into())).await.expect("send");
}

async fn recv(ws: &mut Ws, version: u16) -> (u64, Response) {
    let bytes = next_binary(ws).await.expect("a response");
    let m = kvlite_proto::decode_response(version, &bytes).expect("decode");
    (m.request_id, m.response)
}

async fn call(ws: &mut Ws, version: u16, id: u64, request: Request) -> Response {
    send(ws, version, id, request).await;
    let (got, response) = recv(ws, version).await;
    assert_eq!(got, id);
    response
}

fn page(pgno: u32, fill: u8) -> Page {
    Page {
        pgno,
        data: vec![fill; 4096],
    }
}

async fn open(ws: &mut Ws, version: u16, id: u64, db: &str) -> (u64, u64) {
    match call(
        ws,
        version,
        id,
        Request::Open {
            db: db.into(),
            preload_pages: vec![],
            preload_ranges: vec![],
        },
    )
    .await
    {
        Response::Opened(OpenResponse {
            generation,
            head_txid,
            ..
        }) => (generation, head_txid),
        other => panic!("open: {other:?}"),
    }
}

fn commit(
    db: &str,
    generation: u64,
    expected_head: u64,
    new_size: u32,
    pages: Vec<Page>,
) -> Request {
    Request::Commit {
        db: db.into(),
        generation,
        expected_head,
        new_size,
        commit_id: fastrand::u64(..),
        pages,
    }
}

fn invalid(r: &Response) -> &str {
    match r {
        Response::Error(Error::InvalidRequest(i)) => &i.detail,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

#[test]
fn bad_requests_get_typed_errors_and_never_disturb_others() {
    let server = TestServer::start(Backend::Memory);
    rt().block_on(async {
        let v = kvlite_proto::LATEST_VERSION;
        let mut ws = client(&server, None, v).await;
        let mut other = client(&server, None, v).await;
        let (g, h) = open(&mut ws, v, 1, "good").await;
        let (og, oh) = open(&mut other, v, 1, "other").await;
        let head = match call(&mut ws, v, 2, commit("good", g, h, 1, vec![page(1, 7)])).await {
            Response::Committed(r) => r.txid,
            other => panic!("{other:?}"),
        };
        let bad: Vec<(&str, Request)> = vec![
            ("page 0", commit("good", g, head, 1, vec![page(0, 1)])),
            (
                "short page",
                commit(
                    "good",
                    g,
                    head,
                    1,
                    vec![Page {
                        pgno: 1,
                        data: vec![1; 100],
                    }],
                ),
            ),
            (
                "duplicate",
                commit("good", g, head, 2, vec![page(2, 1), page(2, 2)]),
            ),
            ("past size", commit("good", g, head, 1, vec![page(5, 1)])),
            (
                "size beyond the maximum",
                commit("good", g, head, u32::MAX, vec![page(1, 1)]),
            ),
            (
                "page beyond the maximum",
                Request::GetPages {
                    db: "good".into(),
                    generation: g,
                    pgnos: vec![u32::MAX],
                },
            ),
            ("empty name", Request::Stat { db: String::new() }),
            (
                // (`alpha:x` is tenant alpha's database to an administrator.)
                "colon",
                Request::Stat {
                    db: "alpha:x:y".into(),
                },
            ),
            (
                "get page 0",
                Request::GetPages {
                    db: "good".into(),
                    generation: g,
                    pgnos: vec![0],
                },
            ),
        ];
        // Pipelined: each bad request is followed by a good read on the same
        // connection before any answer arrives, while another connection
        // commits at the same time.
        let n = bad.len();
        let what: Vec<&str> = bad.iter().map(|(w, _)| *w).collect();
        let mixed = async {
            for (i, (_, request)) in bad.into_iter().enumerate() {
                send(&mut ws, v, 100 + i as u64, request).await;
                let read = Request::GetPages {
                    db: "good".into(),
                    generation: g,
                    pgnos: vec![1],
                };
                send(&mut ws, v, 500 + i as u64, read).await;
            }
            let mut answers = std::collections::BTreeMap::new();
            for _ in 0..2 * n {
                let (id, r) = recv(&mut ws, v).await;
                answers.insert(id, r);
            }
            answers
        };
        let concurrent = async {
            let mut head = oh;
            for fill in 1..=10u8 {
                match call(
                    &mut other,
                    v,
                    10 + fill as u64,
                    commit("other", og, head, 1, vec![page(1, fill)]),
                )
                .await
                {
                    Response::Committed(r) => head = r.txid,
                    r => panic!("the well-behaved client saw {r:?}"),
                }
            }
            head
        };
        let (answers, other_head) = tokio::join!(mixed, concurrent);
        assert_eq!(answers.len(), 2 * n);
        for i in 0..n as u64 {
            assert!(
                !invalid(&answers[&(100 + i)]).is_empty(),
                "{}",
                what[i as usize]
            );
            match &answers[&(500 + i)] {
                Response::Pages { pages } => {
                    assert_eq!(pages[0].as_deref(), Some(&[7u8; 4096][..]))
                }
                r => panic!("the good read next to {:?} got {r:?}", what[i as usize]),
            }
        }
        let oh = other_head;
        // A stale head and an unknown database are typed too.
        match call(
            &mut ws,
            v,
            200,
            commit("good", g, head - 1, 1, vec![page(1, 9)]),
        )
        .await
        {
            Response::Error(Error::Fenced {
                reason: FenceReason::HeadMismatch { current, .. },
                ..
            }) => assert_eq!(current, head),
            other => panic!("{other:?}"),
        }
        match call(
            &mut ws,
            v,
            201,
            Request::GetPages {
                db: "nope".into(),
                generation: 1,
                pgnos: vec![1],
            },
        )
        .await
        {
            Response::Error(Error::NotFound(db)) => assert_eq!(db, "nope"),
            other => panic!("{other:?}"),
        }
        // Garbage after a valid header: typed error on its id.
        let mut garbage = 300u64.to_le_bytes().to_vec();
        garbage.extend_from_slice(&[2, 0xff, 0xff, 0xff]);
        ws.send(Message::Binary(garbage.into()))
            .await
            .expect("send");
        let (id, r) = recv(&mut ws, v).await;
        assert_eq!(id, 300);
        assert!(!invalid(&r).is_empty());
        // An oversized message (over the protocol limit, under the hard one)
        // gets TooLarge on its id.
        let mut big = 301u64.to_le_bytes().to_vec();
        big.push(2);
        big.resize(kvlite_proto::MAX_MESSAGE_BYTES + 1024, 0);
        ws.send(Message::Binary(big.into())).await.expect("send");
        let (id, r) = recv(&mut ws, v).await;
        assert_eq!(id, 301);
        assert!(matches!(r, Response::Error(Error::TooLarge(_))), "{r:?}");

        // Nothing was written by any of it.
        match call(
            &mut ws,
            v,
            400,
            Request::GetPages {
                db: "good".into(),
                generation: g,
                pgnos: vec![1, 2],
            },
        )
        .await
        {
            Response::Pages { pages } => {
                assert_eq!(pages[0].as_deref(), Some(&[7u8; 4096][..]));
                assert_eq!(pages[1], None);
            }
            other => panic!("{other:?}"),
        }
        // The same connection, and another one, keep working.
        assert!(matches!(
            call(
                &mut ws,
                v,
                401,
                commit("good", g, head, 2, vec![page(2, 3)])
            )
            .await,
            Response::Committed(_)
        ));
        assert!(matches!(
            call(
                &mut other,
                v,
                2,
                commit("other", og, oh, 1, vec![page(1, 1)])
            )
            .await,
            Response::Committed(_)
        ));
    });
    let stat = server.engine.stat("good").expect("stat");
    assert_eq!(stat.size_pages, 2);
}

#[test]
fn concurrent_requests_on_one_connection_answer_by_id() {
    let server = TestServer::start(Backend::Memory);
    rt().block_on(async {
        let v = kvlite_proto::LATEST_VERSION;
        let mut ws = client(&server, None, v).await;
        let mut gens = Vec::new();
        for i in 0..20u64 {
            gens.push(open(&mut ws, v, i + 1, &format!("db{i}")).await);
        }
        // Fire many requests for many databases at once, some bad.
        for i in 0..20u64 {
            let (g, h) = gens[i as usize];
            let pages = if i % 5 == 0 {
                vec![page(0, 1)]
            } else {
                vec![page(1, i as u8)]
            };
            send(
                &mut ws,
                v,
                1000 + i,
                commit(&format!("db{i}"), g, h, 1, pages),
            )
            .await;
        }
        let mut answered = std::collections::HashMap::new();
        for _ in 0..20 {
            let (id, r) = recv(&mut ws, v).await;
            answered.insert(id, r);
        }
        for i in 0..20u64 {
            let r = &answered[&(1000 + i)];
            if i % 5 == 0 {
                invalid(r);
            } else {
                assert!(matches!(r, Response::Committed(_)), "db{i}: {r:?}");
            }
        }
    });
}

#[test]
fn unparseable_bytes_close_only_their_connection() {
    let server = TestServer::start(Backend::Memory);
    rt().block_on(async {
        let v = kvlite_proto::LATEST_VERSION;
        let mut good = client(&server, None, v).await;
        let (g, h) = open(&mut good, v, 1, "safe").await;
        for junk in [vec![1u8, 2, 3], vec![0xff; 64]] {
            let mut bad = client(&server, None, v).await;
            bad.send(Message::Binary(junk.into())).await.expect("send");
            assert_eq!(
                next_binary(&mut bad).await,
                None,
                "the bad connection is closed"
            );
        }
        let mut text = client(&server, None, v).await;
        text.send(Message::Text("hello".into()))
            .await
            .expect("send");
        assert_eq!(next_binary(&mut text).await, None);
        // A bad hello closes too.
        let mut no_hello = raw(&server, None).await.expect("connect");
        no_hello
            .send(Message::Binary(vec![9, 9, 9].into()))
            .await
            .expect("send");
        assert_eq!(next_binary(&mut no_hello).await, None);
        assert!(matches!(
            call(&mut good, v, 2, commit("safe", g, h, 1, vec![page(1, 1)])).await,
            Response::Committed(_)
        ));
    });
}

#[test]
fn versions_are_negotiated_and_v1_peers_keep_working() {
    let server = TestServer::start(Backend::Memory);
    rt().block_on(async {
        // A version nobody speaks is refused in the handshake.
        let mut ws = raw(&server, None).await.expect("connect");
        ws.send(Message::Binary(
            kvlite_proto::encode_hello(&[99]).expect("hello").into(),
        ))
        .await
        .expect("send");
        let reply = next_binary(&mut ws).await.expect("reply");
        match kvlite_proto::decode_hello_reply(&reply).expect("decode") {
            kvlite_proto::HelloReply::Unsupported { supported, .. } => {
                assert_eq!(supported, kvlite_proto::SUPPORTED_VERSIONS)
            }
            other => panic!("{other:?}"),
        }
        // A v1 client does everything v1 has; v2-only requests are not in its
        // language at all.
        let mut v1 = client(&server, None, 1).await;
        let (g, h) = open(&mut v1, 1, 1, "old-client").await;
        assert!(matches!(
            call(
                &mut v1,
                1,
                2,
                commit("old-client", g, h, 1, vec![page(1, 4)])
            )
            .await,
            Response::Committed(_)
        ));
        assert!(
            kvlite_proto::encode_request(
                1,
                &ClientMessage {
                    request_id: 3,
                    request: Request::SetQuota {
                        db: "x".into(),
                        quota_bytes: 1
                    }
                }
            )
            .is_err()
        );
        // Sent anyway (its bytes spelled as v2 spells them), it gets a typed
        // answer on its id and the connection keeps working.
        let later = kvlite_proto::encode_request(
            2,
            &ClientMessage {
                request_id: 4,
                request: Request::SetQuota {
                    db: "old-client".into(),
                    quota_bytes: 1,
                },
            },
        )
        .expect("encode v2");
        v1.send(Message::Binary(later.into())).await.expect("send");
        let (id, r) = recv(&mut v1, 1).await;
        assert_eq!(id, 4);
        assert!(invalid(&r).contains("version 1"), "{r:?}");
        assert!(matches!(
            call(&mut v1, 1, 5, Request::Ping).await,
            Response::Pong
        ));
        let mut v2 = client(&server, None, 2).await;
        assert!(matches!(
            call(
                &mut v2,
                2,
                1,
                Request::SetQuota {
                    db: "old-client".into(),
                    quota_bytes: 1 << 30
                }
            )
            .await,
            Response::QuotaSet
        ));
    });
    assert_eq!(
        server.engine.stat("old-client").expect("stat").quota_bytes,
        1 << 30
    );
}

#[test]
fn tokens_confine_clients_to_their_namespace() {
    let tokens = Tokens::parse(&format!(
        "alpha {ALPHA}\nbeta {BETA}\nalpha {ALPHA_ADMIN} admin"
    ))
    .expect("tokens");
    let server = TestServer::start_with(Kv::memory(), tokens, None);
    rt().block_on(async {
        for token in [None, Some("wrong-token-0123456789")] {
            match raw(&server, token).await {
                Err(WsError::Http(r)) => assert_eq!(r.status(), 401),
                other => panic!("expected 401, got {:?}", other.map(|_| ())),
            }
        }
        let v = kvlite_proto::LATEST_VERSION;
        let mut alpha = client(&server, Some(ALPHA), v).await;
        let mut beta = client(&server, Some(BETA), v).await;
        let (g, h) = open(&mut alpha, v, 1, "secret").await;
        assert!(matches!(
            call(
                &mut alpha,
                v,
                2,
                commit("secret", g, h, 1, vec![page(1, 42)])
            )
            .await,
            Response::Committed(_)
        ));
        // beta sees nothing of alpha's: not by name, not by listing, not by
        // naming alpha's namespace.
        match call(
            &mut beta,
            v,
            1,
            Request::Stat {
                db: "secret".into(),
            },
        )
        .await
        {
            Response::Error(Error::NotFound(_)) => {}
            other => panic!("{other:?}"),
        }
        match call(
            &mut beta,
            v,
            2,
            Request::List {
                prefix: String::new(),
                after: None,
                limit: 100,
            },
        )
        .await
        {
            Response::Listed { names } => assert!(names.is_empty(), "{names:?}"),
            other => panic!("{other:?}"),
        }
        invalid(
            &call(
                &mut beta,
                v,
                3,
                Request::GetPages {
                    db: "alpha:secret".into(),
                    generation: g,
                    pgnos: vec![1],
                },
            )
            .await,
        );
        // beta's own "secret" is a different database.
        let (bg, _) = open(&mut beta, v, 4, "secret").await;
        assert_ne!(bg, g);
        match call(
            &mut alpha,
            v,
            3,
            Request::List {
                prefix: String::new(),
                after: None,
                limit: 100,
            },
        )
        .await
        {
            Response::Listed { names } => assert_eq!(names, vec!["secret".to_string()]),
            other => panic!("{other:?}"),
        }
        // A tenant cannot lift its own quota; an admin token of its
        // namespace can.
        let quota = |q| Request::SetQuota {
            db: "secret".into(),
            quota_bytes: q,
        };
        match call(&mut alpha, v, 4, quota(u64::MAX)).await {
            Response::Error(Error::Unauthorized(_)) => {}
            other => panic!("{other:?}"),
        }
        let mut admin = client(&server, Some(ALPHA_ADMIN), v).await;
        assert!(matches!(
            call(&mut admin, v, 1, quota(1 << 20)).await,
            Response::QuotaSet
        ));
    });
    assert_eq!(
        server
            .engine
            .stat("alpha:secret")
            .expect("stat")
            .quota_bytes,
        1 << 20,
        "only the admin's change landed"
    );
    assert_eq!(
        server.engine.list("", None, 10).expect("list"),
        vec!["alpha:secret".to_string(), "beta:secret".to_string()]
    );
}

#[test]
fn health_and_metrics_are_served() {
    let server = TestServer::start(Backend::Memory);
    let (vfs, _) = server.vfs();
    let conn = vfs.open("metered").expect("open");
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .expect("write");
    let get = |path: &str| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.addr).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("read");
        body
    };
    assert!(get("/health").contains("ok"));
    let metrics = get("/metrics");
    for name in [
        "kvlite_server_connections",
        "kvlite_server_requests_total{op=\"commit\",outcome=\"ok\"}",
        "kvlite_server_request_seconds_bucket",
        "kvlite_server_received_bytes_total",
        "kvlite_server_sent_bytes_total",
        "kvlite_engine_commit_seconds_bucket",
        "kvlite_engine_takeovers_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}

#[test]
fn the_server_refuses_to_listen_publicly_without_tokens() {
    let rt = rt();
    let engine =
        kvlite_engine::Engine::new(Kv::memory(), Default::default(), &mut Default::default());
    let config = kvlite_server::ServerConfig::new("0.0.0.0:0".parse().expect("addr"));
    let r = rt.block_on(kvlite_server::BoundServer::bind(
        engine,
        Default::default(),
        config,
    ));
    assert!(matches!(
        r,
        Err(kvlite_server::ServerError::InsecureListen(_))
    ));
}

//! In-memory files: rollback journals, temp databases, sort spills,
//! sub-journals. Named ones are registered so xAccess/xDelete see them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

pub(crate) type Data = Arc<Mutex<Vec<u8>>>;
pub(crate) type Registry = Arc<Mutex<HashMap<String, Data>>>;

pub(crate) struct MemFile {
    pub data: Data,
    /// A registered name to remove when this handle closes
    /// (SQLITE_OPEN_DELETEONCLOSE).
    pub delete_on_close: Option<(String, Registry)>,
}

impl Drop for MemFile {
    fn drop(&mut self) {
        if let Some((name, registry)) = self.delete_on_close.take() {
            registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
        }
    }
}

/// Outcome of a read: filled completely, or short (the rest zero-filled).
pub(crate) enum Read {
    Full,
    Short,
}

impl MemFile {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn read(&self, buf: &mut [u8], offset: u64) -> Read {
        let data = self.lock();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = data.get(start..).unwrap_or_default();
        let n = buf.len().min(src.len());
        let (head, tail) = buf.split_at_mut(n);
        head.copy_from_slice(src.get(..n).unwrap_or_default());
        if tail.is_empty() {
            Read::Full
        } else {
            tail.fill(0);
            Read::Short
        }
    }

    pub fn write(&self, buf: &[u8], offset: u64) -> Result<(), ()> {
        let start = usize::try_from(offset).map_err(|_| ())?;
        let end = start.checked_add(buf.len()).ok_or(())?;
        let mut data = self.lock();
        if data.len() < end {
            data.resize(end, 0);
        }
        data.get_mut(start..end).ok_or(())?.copy_from_slice(buf);
        Ok(())
    }

    pub fn truncate(&self, size: u64) {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let mut data = self.lock();
        if size < data.len() {
            data.truncate(size);
        }
    }

    pub fn size(&self) -> u64 {
        self.lock().len() as u64
    }
}

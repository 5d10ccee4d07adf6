"""Builds the wheel with the loadable extension inside: `cargo build` of
../extension (its own Cargo workspace), and libkvlite.so copied into the
package. The wheel is platform-specific (it holds a native library)."""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent.parent


class BuildWithExtension(build_py):
    def run(self):
        super().run()
        target = Path(os.environ.get("KVLITE_EXTENSION_TARGET_DIR", ROOT / "target" / "extension"))
        subprocess.run(
            [
                os.environ.get("CARGO", "cargo"),
                "build",
                "--release",
                "--manifest-path",
                str(ROOT / "extension" / "Cargo.toml"),
                "--target-dir",
                str(target),
            ],
            check=True,
        )
        out = Path(self.build_lib) / "kvlite"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target / "release" / "libkvlite.so", out / "libkvlite.so")


class NativeDistribution(Distribution):
    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithExtension}, distclass=NativeDistribution)

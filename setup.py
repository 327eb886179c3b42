"""Build hook for the optional C accelerator; all other metadata is in pyproject.toml.

``netpol_learn._capture._fastscan`` (netpol_learn/_capture/_fastscan.c) is the capture stage's
per-packet hot path in C: the pcap record walk and the header decoder. It is optional: without a
C compiler the build prints a warning, the package installs without it, and the Python/numpy code
(the reference implementation it must match) is used instead.

The README's test command is ``pip install '.[test]' && python -m pytest`` in the checkout, and
``python -m`` puts the checkout ahead of the installed package on sys.path, so the tests import
``netpol_learn`` from the checkout. A regular (non-editable) build therefore also copies the
compiled extension next to its source, as ``build_ext --inplace`` would, so that those tests run
the extension that was just built rather than silently only the reference code.
"""

import os
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    def run(self):
        super().run()
        if self.inplace or getattr(self, "editable_mode", False):
            return  # already built into the source tree
        for ext in self.extensions:
            built = Path(self.get_ext_fullpath(ext.name))
            target = Path(ext.sources[0]).parent / built.name
            if not built.exists() or not target.parent.is_dir():
                continue  # the optional build failed, or there is no source tree (an sdist build)
            # A new file renamed over the old one: a process that has the old one loaded keeps it.
            tmp = target.with_name(target.name + ".tmp")
            try:
                shutil.copyfile(built, tmp)
                os.replace(tmp, target)
            except OSError as exc:  # a read-only checkout: the installed package still has it
                self.warn(f"could not copy {built.name} into the source tree: {exc}")


setup(
    ext_modules=[
        Extension(
            "netpol_learn._capture._fastscan",
            sources=["netpol_learn/_capture/_fastscan.c"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)

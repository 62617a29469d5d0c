"""cbatch's build: the Python package, plus the C programs in csrc/ compiled as static
executables and installed beside the console scripts (cbatch-starter, cbatch-keeper).

Static on purpose: pbs_mom runs cbatch-starter with the job owner's environment, and a
dynamically linked program would load LD_PRELOAD/LD_AUDIT code of theirs on the host.
"""

import os
import shlex
import subprocess
from pathlib import Path

from setuptools import Distribution, setup

HERE = Path(__file__).resolve().parent
PROGRAMS = sorted(HERE.glob("csrc/*.c"))
CFLAGS = ["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-D_FORTIFY_SOURCE=2"]

_build_scripts = Distribution().get_command_class("build_scripts")


class BuildScripts(_build_scripts):
    """Compile each csrc/<name>.c to a static <name> and install it as a script."""

    def finalize_options(self):
        super().finalize_options()
        self.scripts = self.scripts or []  # None when every script is a C program

    def get_source_files(self):  # what an sdist carries
        return [*self.scripts, *(str(p.relative_to(HERE)) for p in PROGRAMS)]

    def run(self):
        super().run()  # the Python scripts, if any
        Path(self.build_dir).mkdir(parents=True, exist_ok=True)
        cc = shlex.split(os.environ.get("CC", "cc"))
        for source in PROGRAMS:
            target = Path(self.build_dir) / source.stem
            subprocess.run([*cc, *CFLAGS, "-o", str(target), str(source)], check=True)
            target.chmod(0o755)


_install_scripts = Distribution().get_command_class("install_scripts")


class InstallScripts(_install_scripts):
    """setuptools installs scripts only when setup.cfg lists some: the C programs count."""

    def run(self):
        super().run()
        if not self.distribution.scripts:
            self.run_command("build_scripts")
            self.outfiles += self.copy_tree(self.build_dir, self.install_dir)


class WithPrograms(Distribution):
    def has_scripts(self):  # build and install scripts even when only csrc/ has any
        return bool(PROGRAMS) or super().has_scripts()


setup(distclass=WithPrograms, cmdclass={"build_scripts": BuildScripts, "install_scripts": InstallScripts})

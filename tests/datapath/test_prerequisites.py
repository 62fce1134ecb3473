"""Environment problems are one clear line that says what to do (no root needed to check the messages)."""

from __future__ import annotations

import builtins
import os

import pytest

from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.datapath import build, environment, loader


def test_not_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EnvironmentProblem, match="needs root"):
        loader.Datapath.open()


def test_missing_kernel_headers(monkeypatch):
    real = os.uname()

    class Fake:
        release = "0.0.0-nonexistent"
        sysname, nodename, version, machine = real.sysname, real.nodename, real.version, real.machine

    monkeypatch.setattr(os, "uname", lambda: Fake)
    with pytest.raises(EnvironmentProblem, match=r"kernel headers for 0\.0\.0-nonexistent.*scripts/setup\.sh"):
        environment.check_headers()


def test_missing_bcc(monkeypatch):
    real_import = builtins.__import__

    def no_bcc(name, *args, **kw):
        if name == "bcc":
            raise ImportError("no bcc")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_bcc)
    with pytest.raises(EnvironmentProblem, match="python3-bpfcc"):
        environment.import_bcc()


def test_source_is_one_translation_unit():
    src = build.datapath_source()
    assert '#include "' not in src                 # BCC rewrites map calls only in the main file
    assert "int from_container(" in src and "int to_container(" in src
    assert src.count("struct ctl_event {") == 1

"""The package's surface: docstrings everywhere, and type stubs that name what exists."""

import ast
import inspect
from pathlib import Path

import mmf

STUBS = Path(mmf.__file__).with_name("_mmf.pyi")
CLASSES = [mmf.Segment, mmf.SegmentLock, mmf.FrameWriter, mmf.PendingFrame, mmf.FrameReader,
           mmf.Frame]


def public_members(cls):
    return [n for n in vars(cls) if not n.startswith("_") or n in ("__enter__", "__exit__")]


def test_every_class_and_method_has_a_docstring():
    missing = []
    for cls in CLASSES + [mmf.Error, mmf.Timeout, mmf.ReleasedError]:
        if not inspect.getdoc(cls):
            missing.append(cls.__name__)
    for cls in CLASSES:
        for name in public_members(cls):
            if not inspect.getdoc(getattr(cls, name)):
                missing.append(f"{cls.__name__}.{name}")
    assert not missing, f"no docstring: {missing}"


def test_stubs_declare_every_public_member():
    tree = ast.parse(STUBS.read_text())
    stubbed = {
        node.name: {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }
    for name in mmf.__all__:
        obj = getattr(mmf, name)
        if isinstance(obj, type):
            assert name in stubbed, f"{name} has no stub"
    for cls in CLASSES:
        absent = set(public_members(cls)) - stubbed[cls.__name__]
        assert not absent, f"{cls.__name__}: not in the stubs: {absent}"
        extra = {n for n in stubbed[cls.__name__] if not n.startswith("__")} - set(vars(cls))
        assert not extra, f"{cls.__name__}: stubbed but absent: {extra}"


def test_exception_hierarchy():
    assert issubclass(mmf.Timeout, TimeoutError)
    assert issubclass(mmf.NotFound, FileNotFoundError)
    assert issubclass(mmf.AlreadyExists, FileExistsError)
    assert issubclass(mmf.InvalidArgument, ValueError)
    assert issubclass(mmf.ReleasedError, ValueError)
    for name in ("Poisoned", "WriterGone", "TooLarge", "ReadOnly", "WouldBlock", "PermissionDenied"):
        assert issubclass(getattr(mmf, name), mmf.Error)
    assert mmf.Timeout.__module__ == "mmf"

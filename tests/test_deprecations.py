"""The deprecation policy of the suite catches what it promises to (mmtune.testing.deprecations)."""

from __future__ import annotations

import types
import warnings

import pytest

from mmtune.testing.deprecations import made_by_mmtune


def _module(name: str, source: str) -> types.ModuleType:
    """A module called `name` (its frames report that package) with `source` run in it."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


LIBRARY = _module("fakelib.core", """
import warnings

def old_api():
    warnings.warn("`old_api` is deprecated", FutureWarning)  # no stacklevel, as transformers does
    return 1

def helper():
    return old_api()
""")


def test_a_library_deprecation_called_by_mmtune_is_an_error():
    caller = _module("mmtune.fake_caller", "def run(lib):\n    return lib.helper()\n")
    with pytest.raises(FutureWarning, match=r"old_api.*called by mmtune\.fake_caller:2"):
        caller.run(LIBRARY)


def test_a_library_deprecation_called_by_another_library_is_left_to_the_filters():
    other = _module("otherlib.user", "def run(lib):\n    return lib.helper()\n")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert other.run(LIBRARY) == 1
    assert [str(w.message) for w in seen] == ["`old_api` is deprecated"]


def test_a_deprecation_warned_inside_mmtune_is_an_error():
    own = _module("mmtune.fake_own", "import warnings\ndef run():\n    warnings.warn('old', DeprecationWarning, stacklevel=2)\n")
    with pytest.raises(DeprecationWarning, match="called by mmtune.fake_own:3"):
        own.run()


def test_other_warnings_pass_through_unchanged():
    caller = _module("mmtune.fake_user", "import warnings\ndef run():\n    warnings.warn('just so you know', UserWarning)\n")
    with pytest.warns(UserWarning, match="just so you know"):
        caller.run()


def test_made_by_mmtune_names_no_caller_for_plain_test_code():
    import sys

    assert made_by_mmtune(sys._getframe()) is None

"""The data tiers of tests/conftest.py, run in a throwaway pytest: skip only where the shared files are absent."""

import os
import shutil
import tomllib
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MARKED_TEST = """
import os
from pathlib import Path

import pytest


@pytest.mark.needs_shared_data("ml-1m-seq/ml-1m.txt")
def test_reads_ml1m():
    assert (Path(os.environ["RECPIPE_DATA_DIR"]) / "ml-1m-seq" / "ml-1m.txt").read_text() == "1 2 3\\n"


def test_needs_nothing():
    pass
"""


@pytest.fixture()
def project(pytester: pytest.Pytester) -> Path:
    """A repository laid out like this one: tests/conftest.py copied, the markers of pyproject.toml."""
    markers = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    pytester.makeini(
        "[pytest]\naddopts = -ra --strict-markers -p no:cacheprovider\nmarkers =\n    " + "\n    ".join(markers)
    )
    (pytester.path / "tests").mkdir()
    shutil.copy(TESTS / "conftest.py", pytester.path / "tests" / "conftest.py")
    (pytester.path / "tests" / "test_marked.py").write_text(MARKED_TEST)
    return pytester.path


def _data_folder(folder: Path, with_ml1m: bool) -> Path:
    (folder / "ml-100k").mkdir(parents=True)
    if with_ml1m:
        (folder / "ml-1m-seq").mkdir()
        (folder / "ml-1m-seq" / "ml-1m.txt").write_text("1 2 3\n")
    return folder


def _run(pytester: pytest.Pytester, data_dir: Path) -> pytest.RunResult:
    os.environ["RECPIPE_DATA_DIR"] = str(data_dir)  # pytester restores os.environ afterwards
    return pytester.runpytest_subprocess("tests")


def test_marked_tests_skip_with_one_line_reason_where_the_files_are_absent(pytester, project, tmp_path):
    folder = _data_folder(tmp_path / "own-data", with_ml1m=False)
    result = _run(pytester, folder)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            f"SKIPPED [[]1[]] tests/test_marked.py:*: needs ml-1m-seq/ml-1m.txt from ../shared/data, not in {folder} "
            "(set RECPIPE_DATA_DIR to a folder holding it)"
        ]
    )


def test_marked_tests_run_where_the_files_are(pytester, project, tmp_path):
    _run(pytester, _data_folder(tmp_path / "all-data", with_ml1m=True)).assert_outcomes(passed=2)


def test_in_the_shared_folder_a_missing_file_fails_instead_of_skipping(pytester, project):
    shared = _data_folder(project.parent / "shared" / "data", with_ml1m=False)  # <repo>/../shared/data
    _run(pytester, shared).assert_outcomes(passed=1, failed=1)


def test_a_marker_without_paths_is_a_usage_error(pytester, project, tmp_path):
    (project / "tests" / "test_marked.py").write_text(
        "import pytest\n\n\n@pytest.mark.needs_shared_data()\ndef test_unsaid():\n    pass\n"
    )
    result = _run(pytester, _data_folder(tmp_path / "data", with_ml1m=False))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_marked.py::test_unsaid: needs_shared_data takes the paths*"])

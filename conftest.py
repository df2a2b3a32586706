"""Loaded by pytest for every run under the project's root, whatever paths it is given."""

import os

# the learner's hot path is compiled from its own .py files (setup.py): the doctests of such a module are
# collected from the compiled module, whose __file__ is not the .py pytest collects them from (it checks that
# the two match unless told not to; streaming.learning checks that the build is of that very .py). Set here,
# not in tests/conftest.py: pytest loads that one only when it collects tests/ (``pytest
# streaming/learning/state.py`` failed with "import file mismatch")
os.environ["PY_IGNORE_IMPORTMISMATCH"] = "1"

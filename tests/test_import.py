"""`import mappa_env` must stay light: no torch, no transformers, no sklearn, even after building an environment.

sklearn is a dependency, but only grading needs it (``mappa_env.metrics`` imports it inside its functions).
"""

import subprocess
import sys


def test_import_does_not_load_torch_or_transformers():
    code = (
        "import sys, mappa_env\n"
        "import mappa_env.envs.dsbench, mappa_env.coach, mappa_env.sandbox, mappa_env.tasks, mappa_env.metrics\n"
        "import mappa_env.policies, mappa_env.evaluation\n"
        "env = mappa_env.make('dsbench-v0', split='heldout')\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'sklearn') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_the_math_libraries_load_only_when_a_math_env_is_made():
    code = (
        "import sys, mappa_env\n"
        "import mappa_env.coach, mappa_env.policies, mappa_env.evaluation, mappa_env.tasks\n"
        "env = mappa_env.make('dsbench-v0', split='heldout')\n"
        "math = ('math_verify', 'reasoning_gym', 'champ_dataset', 'sympy')\n"
        "print('BEFORE', sorted(m for m in math if m in sys.modules))\n"
        "env = mappa_env.make('mathchat-v0', split='heldout')\n"
        "env.reset(seed=0)\n"
        "print('AFTER', 'reasoning_gym' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "BEFORE []" in out.stdout and "AFTER True" in out.stdout

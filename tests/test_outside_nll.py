"""An onnxruntime-only script that knows only ARTIFACTS.md gets kvae's own test NLL."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from export import export_run
from kvae.data import pipeline
from kvae.evaluate import evaluate

SCRIPT = Path(__file__).parents[1] / "examples" / "onnx_iwae_nll.py"
BLOCKER = (
    "import sys, runpy\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('tensorflow', 'keras', 'kvae', 'tf2onnx', 'export'):\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@pytest.mark.parametrize("fixture", ["tiny_run", "tiny_gaussian_conv_run"])
def test_outside_script_matches_kvae_evaluate(fixture, request, tmp_path, splits):
    run_dir, result = request.getfixturevalue(fixture)
    out = tmp_path / "artifacts"
    export_run(run_dir, out)
    k, n = 200, 100
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(SCRIPT), str(out), "--k", str(k), "--limit", str(n)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    outside = json.loads(proc.stdout.strip().splitlines()[-1])
    x = pipeline.prepare_eval(splits.x_test[:n], binarize=result.model.likelihood == "bernoulli")
    inside = evaluate(result.model, x, k=k, verbose=0)
    assert outside["num_examples"] == n
    assert abs(outside["nll"] - inside["nll"]) < 0.5, (outside, inside["nll"])

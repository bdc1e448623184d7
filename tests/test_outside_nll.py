"""An onnxruntime-only script that knows only ARTIFACTS.md gets kvae's own test NLL.

Both sides use the published test draw (kvae.data.protocol.evaluation_views)
and the same importance samples: the script (seed 0) gives image i the i-th
(k, latent_dim) block of the noise stream, and so does
kvae.evaluate.evaluate(seed=0) when its chunk holds all k samples of an
image. A conv model's default chunk holds fewer (about 100: the size of its
widest layer bounds it), so the tests pass chunk_size=K and few images per
call. The two numbers then differ only by the computation (ONNX graphs and
float64 sums against Keras's float32 ones), which the tight bar below checks:
with other noise they would differ by the Monte Carlo error, 0.01 to 0.1
nats here. k = 200 and the first 50 test images keep it fast (the issue's
numbers are k = 1000 on 500 images; the agreement does not depend on them).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvae_export import export_run
from kvae.data.protocol import evaluation_views
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
K, NUM_IMAGES = 200, 50
# Nats per image. Measured: 9e-6 for the Gaussian conv model (Keras sums its log p(x|z), near 760 nats, in
# float32), 1e-6 and 4e-7 for the Bernoulli MLP and the VampPrior one.
AGREEMENT = 1e-4
EVALUATE_BATCH = 10  # images per call: 10 * K samples through a conv decoder stay near 200 MB


@pytest.mark.parametrize("fixture", ["tiny_run", "tiny_gaussian_conv_run", "tiny_vamp_run"])
def test_outside_script_matches_kvae_evaluate(fixture, request, tmp_path, splits):
    run_dir, result = request.getfixturevalue(fixture)
    out = tmp_path / "artifacts"
    manifest = export_run(run_dir, out).manifest
    assert manifest["prior"]["type"] == ("vamp" if fixture == "tiny_vamp_run" else "normal")
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(SCRIPT), str(out), "--k", str(K), "--limit", str(NUM_IMAGES)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    outside = json.loads(proc.stdout.strip().splitlines()[-1])
    _, x_test = evaluation_views(splits.x_val, splits.x_test, result.model.likelihood == "bernoulli")
    inside = evaluate(result.model, x_test[:NUM_IMAGES], k=K, seed=0, batch_size=EVALUATE_BATCH, chunk_size=K, verbose=0)
    assert outside["num_examples"] == NUM_IMAGES and outside["k"] == K
    assert abs(outside["nll"] - inside["nll"]) < AGREEMENT, (outside, inside["nll"])

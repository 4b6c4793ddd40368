"""Worst eval-mode logit difference, jaxnets vs torchvision, for every architecture.

  python scripts/parity_report.py [--batch 4]

Random-init torchvision models with randomized BatchNorm statistics and affine parameters,
converted with jaxnets.from_torchvision; fp32 on CPU, highest matmul precision. Reports
max |jax - torch| / max |torch| over the batch at 224x224 and 97x131, and top-1 agreement.
"""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch  # before anything imports tensorflow (shared/PORTING.md)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import nhwc, relative_error, torchvision_model

import jaxnets
from jaxnets.convert import from_torchvision


def main():
    jaxnets.use_fast_cpu_flags()  # as the README's numbers were measured
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--models", default=",".join(jaxnets.list_models()))
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| model | rel. diff 224x224 | rel. diff 97x131 | top-1 agreement |")
    print("|---|---:|---:|---:|")
    with jax.default_matmul_precision("highest"):
        for name in args.models.split(","):
            torch_model = torchvision_model(name).eval()
            variables = from_torchvision(name, torch_model.state_dict())
            model = jaxnets.create_model(name)
            diffs, agree, total = [], 0, 0
            for size in [(224, 224), (97, 131)]:
                x = torch.randn(args.batch, 3, *size, generator=torch.Generator().manual_seed(0))
                with torch.no_grad():
                    expected = torch_model(x).numpy()
                actual = np.asarray(model.apply(variables, jnp.asarray(nhwc(x))))
                diffs.append(relative_error(actual, expected))
                agree += int((actual.argmax(1) == expected.argmax(1)).sum())
                total += len(x)
            print(f"| {name} | {diffs[0]:.1e} | {diffs[1]:.1e} | {agree}/{total} |", flush=True)


if __name__ == "__main__":
    main()

r"""C&W-L2 and OPTMARGIN throughput: lnjax vs Foolbox 3's C&W vs a bare jitted gradient loop.

  .venv/bin/python benchmarks/attack_bench.py            # (make bench runs every benchmark)

One run, one trained MNIST model (the `mnist_normal` preset: the small MNIST CNN, trained once into
benchmarks/cache/mnist_normal; MNIST is prepared into data/ if missing), the same test images (the
first `--images` the model classifies correctly), the same Adam steps and binary-search steps:

  lnjax C&W    `lnjax.attacks.make_cw_l2` (κ = 0, OPTBRITTLE): one jit, vmapped over the images,
               binary search over c on the device;
  Foolbox C&W  `foolbox.attacks.L2CarliniWagnerAttack` on the same JAX model through eagerpy
               (`foolbox.JAXModel`), same steps / binary-search steps / learning rate / c0 / κ;
  bare C&W     the floor: one jitted `lax.fori_loop` of binary_steps × steps calls of
               `value_and_grad` of the same C&W objective over the batch, plain gradient steps, no
               bookkeeping;
  OPTMARGIN    `lnjax.attacks.make_optmargin` (n = 20 copies, RMS ε 0.3, its SPEC learning rate
               and c0 of 0.2) with the same steps, and its own bare loop (the objective summed over
               the 20 copies). On CPU both run the batch in chunks of `attacks.cw.default_chunk(20)`
               images (~256 model evaluations per step); C&W's default chunk covers the batch.

Abort-early is off on every side, so each does exactly binary_steps × steps gradient evaluations
per image. Every side runs once untimed first (compilation; Foolbox's per-op dispatch warm-up), then
once timed. Ratios: cw_vs_foolbox = lnjax C&W images/s ÷ Foolbox images/s; overhead_vs_bare =
lnjax C&W seconds ÷ bare C&W seconds (OPTMARGIN's own overhead is reported too). The last stdout
line is one JSON object.

Foolbox is the `bench` extra of pyproject.toml (installed by every `make` target's venv).

References:
  Carlini & Wagner, IEEE S&P 2017; He, Li & Song, ICLR 2018 (OPTMARGIN); Rauber et al., Foolbox
    Native, JOSS 2020.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/common.py, next to this script)

common.enter_repo()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from experiments.configs.train import get_config  # noqa: E402
from experiments.runs import load_trained  # noqa: E402
from lnjax import attacks as A, data, models  # noqa: E402
from lnjax.attacks.common import vmap_chunked  # noqa: E402
from lnjax.attacks.cw import default_chunk, orthogonal_noise  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--images", type=int, default=100, help="test images (one batch)")
    p.add_argument("--steps", type=int, default=100, help="Adam steps per binary-search step")
    p.add_argument("--binary_steps", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (Foolbox: stepsize)")
    p.add_argument(
        "--c0",
        type=float,
        default=0.1,
        help="C&W's first c (Foolbox: initial_const); 4 binary steps from C&W's 1e-3 never reach a working c",
    )
    p.add_argument("--om_lr", type=float, default=0.2, help="OPTMARGIN's learning rate (SPEC: 0.2)")
    p.add_argument("--om_c0", type=float, default=0.2, help="OPTMARGIN's first c (SPEC: 0.2)")
    p.add_argument("--copies", type=int, default=20, help="OPTMARGIN's n")
    p.add_argument("--noise_rms", type=float, default=0.3, help="OPTMARGIN's RMS ε")
    p.add_argument("--no_foolbox", action="store_true", help="skip Foolbox (e.g. not installed)")
    p.add_argument("--out", default="benchmarks/out/attack_bench.json")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if min(args.images, args.steps, args.binary_steps, args.copies) < 1:
        p.error("--images, --steps, --binary_steps and --copies must be ≥ 1")
    return args


def timed(fn, *args):
    """(result, seconds) of fn(*args) with every output ready."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def make_bare(apply_fn, params, *, steps: int, lr: float, c: float, noise=None, chunk=None):
    """The floor: binary_steps × steps `value_and_grad` calls of the C&W objective, one jitted loop.

    Same objective as `make_cw_l2` (tanh variables, ‖x' − x‖² + c · Σ max(margin, 0), the copies
    x' + v_i clipped to [0, 1] when `noise` [n, ...] is given), summed over the batch; plain
    gradient steps instead of Adam, no best-point tracking, no binary search. The batch runs in the
    attacks' chunks (`chunk` examples at a time, as `vmap_chunked` splits it), so the floor gets
    the same cache-sized batches.
    """

    def objective(w, x0, y):
        x = (jnp.tanh(w) + 1.0) / 2.0
        xs = x[:, None] if noise is None else jnp.clip(x[:, None] + noise[None], 0.0, 1.0)
        b, n = xs.shape[:2]
        z = apply_fn(params, xs.reshape(b * n, *xs.shape[2:])).reshape(b, n, -1)
        true = jnp.take_along_axis(z, y[:, None, None], axis=-1)[..., 0]
        other = jnp.max(jnp.where(jax.nn.one_hot(y, z.shape[-1])[:, None] > 0, -jnp.inf, z), axis=-1)
        dist = jnp.sum(jnp.square(x - x0).reshape(b, -1), axis=1)
        return jnp.sum(dist + c * jnp.sum(jnp.maximum(true - other, 0.0), axis=1))

    vg = jax.value_and_grad(objective)

    def run(x0, y):
        w0 = jnp.arctanh(jnp.clip(2.0 * x0 - 1.0, -1 + 1e-6, 1 - 1e-6))

        def body(_, carry):
            w, total = carry
            loss, g = vg(w, x0, y)
            return w - lr * g, total + loss

        return lax.fori_loop(0, steps, body, (w0, jnp.float32(0.0)))

    def chunked(x0, y):
        if chunk is None or chunk >= x0.shape[0]:
            return run(x0, y)  # the whole batch in one loop (measured a little faster than vmap)
        # per example (a batch of one) under vmap_chunked: vmap folds each chunk's examples back
        # into the convolutions' batch dimension, so one chunk is one batched loop
        return vmap_chunked(lambda xi, yi: run(xi[None], yi[None]), (x0, y), chunk)

    return jax.jit(chunked)


def run_foolbox(apply_fn, params, x, y, args):
    """(seconds, success [B], adversarials [B, ...]) of Foolbox's C&W; raises ImportError if missing."""
    import foolbox as fb  # the `bench` extra

    model = fb.JAXModel(lambda xb: apply_fn(params, xb), bounds=(0.0, 1.0))
    attack = fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=args.binary_steps,
        steps=args.steps,
        stepsize=args.lr,
        confidence=0.0,
        initial_const=args.c0,
        abort_early=False,
    )

    def once():
        _, adv, success = attack(model, x, y, epsilons=None)
        return jax.block_until_ready((adv, success))

    once()  # warm-up: eagerpy dispatches op by op; the first call compiles each op for these shapes
    t0 = time.perf_counter()
    adv, success = once()
    return time.perf_counter() - t0, np.asarray(success), np.asarray(adv)


def side(name, seconds, n, x, result=None, extra=None):
    row = {"side": name, "seconds": seconds, "images_per_s": n / seconds}
    if result is not None:
        row.update(A.summarize(x, result))
    row.update(extra or {})
    common.log(f"{name}: {seconds:.2f} s, {n / seconds:.1f} images/s {extra or ''}")
    return row


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    common.ensure_double_mnist("data")  # also prepares MNIST
    workdir = common.ensure_trained("mnist_normal", get_config("mnist_normal"))
    model, params, _ = load_trained(workdir)
    apply_fn = models.apply_fn(model)
    test = data.load_dataset("mnist", "test", "data", limit=4 * args.images)
    pred = np.asarray(jnp.argmax(apply_fn(params, jnp.asarray(test.x)), -1))
    chosen = np.flatnonzero(pred == np.asarray(test.y))[: args.images]
    x, y = jnp.asarray(test.x[chosen]), jnp.asarray(test.y[chosen])
    n = int(x.shape[0])
    common.log(f"{n} correctly classified test images; {args.binary_steps} × {args.steps} steps")
    key = jax.random.key(args.seed)
    total_steps = args.binary_steps * args.steps
    rows = []

    cw = A.make_cw_l2(
        steps=args.steps, binary_steps=args.binary_steps, lr=args.lr, c0=args.c0, abort_early=False
    )
    timed(cw, key, apply_fn, params, x, y)  # compile
    res, t_cw = timed(cw, key, apply_fn, params, x, y)
    rows.append(side("lnjax_cw", t_cw, n, x, res))

    bare = make_bare(apply_fn, params, steps=total_steps, lr=args.lr, c=args.c0, chunk=default_chunk(1))
    timed(bare, x, y)
    _, t_bare = timed(bare, x, y)
    rows.append(side("bare_cw", t_bare, n, x))

    om = A.make_optmargin(
        eps=args.noise_rms,
        n=args.copies,
        lr=args.om_lr,
        steps=args.steps,
        binary_steps=args.binary_steps,
        c0=args.om_c0,
        abort_early=False,
    )
    timed(om, key, apply_fn, params, x, y)
    res_om, t_om = timed(om, key, apply_fn, params, x, y)
    rows.append(side("lnjax_optmargin", t_om, n, x, res_om))

    noise = orthogonal_noise(jax.random.key(1), tuple(x.shape[1:]), args.copies, args.noise_rms)
    om_chunk = default_chunk(args.copies)
    bare_om = make_bare(
        apply_fn, params, steps=total_steps, lr=args.om_lr, c=args.om_c0, noise=noise, chunk=om_chunk
    )
    timed(bare_om, x, y)
    _, t_bare_om = timed(bare_om, x, y)
    rows.append(side("bare_optmargin", t_bare_om, n, x))

    t_fb = None
    if not args.no_foolbox:
        try:
            t_fb, fb_success, fb_adv = run_foolbox(apply_fn, params, x, y, args)
        except ImportError as e:
            sys.exit(
                f"error: Foolbox is not installed ({e}); install the bench extra "
                "(`.venv/bin/pip install -e '.[bench]'`, or any `make` target) or pass --no_foolbox"
            )
        # Foolbox returns an all-zero image where it found nothing (its best_advs start at zeros), and
        # that image is often misclassified too: count a success only where it found a real point.
        found = fb_success & np.any(fb_adv.reshape(n, -1) != 0, axis=1)
        fb_res = A.AttackResult(x_adv=jnp.asarray(fb_adv), success=jnp.asarray(found), margin=jnp.zeros(n))
        rows.append(side("foolbox_cw", t_fb, n, x, fb_res))

    summary = {
        "cw_vs_foolbox": None if t_fb is None else t_fb / t_cw,
        "optmargin_images_per_s": n / t_om,
        "overhead_vs_bare": t_cw / t_bare,
    }
    report = {
        "args": vars(args),
        "machine": common.machine(),
        "images": n,
        "gradient_evaluations_per_image": total_steps,
        "rows": rows,
        "optmargin_overhead_vs_bare": t_om / t_bare_om,
        **summary,
    }
    common.write_json(Path(args.out), report)
    print_table(report)
    common.last_line(summary)


def print_table(report) -> None:
    print(
        f"\nattack_bench: {report['images']} MNIST test images, "
        f"{report['gradient_evaluations_per_image']} gradient evaluations per image"
    )
    print("| side | seconds | images/s | success | mean L2 | mean RMS |")
    print("|---|---|---|---|---|---|")
    for r in report["rows"]:
        sr = r.get("success_rate")
        print(
            f"| {r['side']} | {r['seconds']:.2f} | {r['images_per_s']:.1f} | "
            f"{'–' if sr is None else f'{sr:.0%}'} | {r.get('l2', float('nan')):.3f} | "
            f"{r.get('rms', float('nan')):.4f} |"
        )
    fb = report["cw_vs_foolbox"]
    print(
        f"\nC&W vs Foolbox: {'–' if fb is None else f'{fb:.1f}×'}; C&W overhead vs bare loop: "
        f"{report['overhead_vs_bare']:.2f}×; OPTMARGIN overhead vs its bare loop: "
        f"{report['optmargin_overhead_vs_bare']:.2f}×"
    )


if __name__ == "__main__":
    main()

"""ASan driver for l3ic_jax._cpu (run by tools/cpu_sanitize.sh): CpuNetwork without XLA over odd sizes,
batches, both Winograd tile sizes and 1-3 threads; asserts shapes and finite outputs, the sanitizers do the rest."""
import numpy as np
from l3ic_jax import model as M
from l3ic_jax import cpu_backend as CB
rng = np.random.default_rng(0)
checks = 0
for C in (16, 32, 64):
    tensors = {}
    for k, shp in M.kernel_shapes(C).items():
        fan = shp[0] * shp[1] * shp[2]
        tensors[k + "/kernel"] = (rng.standard_normal(shp) / np.sqrt(fan)).astype(np.float32)
        tensors[k + "/bias"] = (0.01 * rng.standard_normal(shp[3])).astype(np.float32)
    tensors["encoder/latent_scaling"] = np.float32(1.0)
    for m in (2, 4):
        for threads in (1, 2, 3):
            net = CB.CpuNetwork(tensors, C, winograd_m=m, threads=threads)
            for (n, h, w) in ((1, 8, 8), (2, 16, 24), (1, 40, 72), (1, 64, 64), (3, 24, 8), (1, 136, 72), (1, 13, 21), (2, 9, 17), (1, 1, 1)):
                x = rng.random((n, h, w, 3), dtype=np.float32)
                z = net.encode(x)
                assert z.shape == (n, -(-h // 8), -(-w // 8), C) and np.isfinite(z).all()
                y = net.decode(np.round(z).clip(-15, 16).astype(np.float32))
                assert y.shape == (n, 8 * -(-h // 8), 8 * -(-w // 8), 3) and np.isfinite(y).all()
                checks += 1
print("asan driver: ok,", checks, "encode/decode pairs")

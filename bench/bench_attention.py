"""Speed of the three cross-attention stages at the size the model trains with on CPU.

d = 64, N_Q = 361 proposals (the default anchors of T = 128), K = 5 supports of T_S = 16
snippets, batch B = 16. Times the forward pass and forward + backward of QtoS -> Dynamics ->
StoQ (default switches), and, as the alternative the modules avoid, the same forward with a
python loop over the supports. Median and best of 20 runs after 3 warm-ups (on a machine that
runs other jobs too, the best run is the steadier figure).

Reproduce: ``python bench/bench_attention.py``
"""
import torch
from _common import machine, median_ms
from einops import rearrange

from fscal_edu.attention import DynamicsCA, QtoSContextCA, StoQContextCA, cross_attend

B, N_Q, K, T_S, d = 16, 361, 5, 16, 64


def main():
    here = machine()                 # measured before the timings
    torch.manual_seed(0)
    X_Q = torch.randn(B, N_Q, d, requires_grad=True)
    X_S = torch.randn(B, K, T_S, d, requires_grad=True)
    qtos, dynamics, stoq = QtoSContextCA(d), DynamicsCA(d), StoQContextCA(d)

    def three_stages():
        X_S_tilde, _ = qtos(X_Q, X_S)
        Y_S, _ = dynamics(X_S_tilde)
        return stoq(Y_S, X_Q)[0]

    def looped_qtos():               # what the support axis replaces: one call per support
        X_S_tilde = [cross_attend(X_Q, X_S[:, l], qtos.W_QtoS, scale=d ** -0.5, mass_norm=True)[0]
                     for l in range(K)]
        return qtos.norm(torch.stack(X_S_tilde, dim=1))

    def batched_qtos():
        return qtos(X_Q, X_S)[0]

    def folded_qtos():               # the other batched option: repeat X_Q once per support
        X_Q_rep = X_Q.repeat_interleave(K, dim=0)
        X_S_rep = rearrange(X_S, "b k t d -> (b k) t d")
        out = cross_attend(X_Q_rep, X_S_rep, qtos.W_QtoS, scale=d ** -0.5, mass_norm=True)[0]
        return qtos.norm(rearrange(out, "(b k) t d -> b k t d", k=K))

    torch.testing.assert_close(looped_qtos(), batched_qtos())
    torch.testing.assert_close(folded_qtos(), batched_qtos())
    with torch.no_grad():
        rows = {"three stages, forward": median_ms(three_stages),
                "QtoS, support axis (the module)": median_ms(batched_qtos),
                "QtoS, python loop over supports": median_ms(looped_qtos),
                "QtoS, X_Q repeated per support": median_ms(folded_qtos)}
    rows["three stages, forward + backward"] = median_ms(lambda: three_stages().sum().backward())
    print(f"B={B}, N_Q={N_Q}, K={K}, T_S={T_S}, d={d}; {here}")
    for name, (median, best) in rows.items():
        print(f"{name:36s} median {median:7.2f} ms, best {best:7.2f} ms")


if __name__ == "__main__":
    main()

"""What is planted in every student file of this folder (and in examples/cs231n_layers.py).

STUDENTS = {filename: {function_name: Entry}}, one Entry for every function a file defines, where

    Entry = dict(
        correct=bool,        # the function has no mistake of its own and none inherited (mistakes == [], wrong == ())
        mistakes=[dict(category=..., stage=..., words=...)],
        wrong=(...),         # which outputs differ from the right answer, a subset of
                             # ("y", "running_mean", "running_var", "dx", "dgamma", "dbeta")
        consistent=bool,
    )

How the claims are meant (and were checked, float64 inputs, eps=1e-5, momentum 0.9, G=2 for group norm with
C=6, i.e. C // G != G):

* A file is run end to end: a backward gets the cache of the same file's forward (train mode), as the notebook
  does; there is no other way to call it. So a backward whose own code is right but that is fed a wrong
  forward's cache is wrong too; its mistakes then repeat the forward's, with words starting "Inherited from".
  The same goes for a function that calls another buggy one (spatial_batchnorm_forward calling
  batchnorm_forward, a group norm calling layernorm_forward, ...): "Inherited from <function>: ...".
* "wrong" compares against the right answer of the cs231n contract: values and shape (a (1, D) dgamma where
  (D,) is due is wrong). For batchnorm_forward / spatial_batchnorm_forward, "y" covers train mode and test mode
  (test mode run with given running statistics), and running_mean / running_var are what is found in bn_param
  after a train-mode call, both with running statistics given in bn_param and with none given (the defaults).
* consistent: for a backward, whether it returns the exact gradient of the file's own forward (train mode)
  for the file's own dout, by values (a (1, D) dgamma with the right numbers counts as consistent). For a
  forward, whether every backward of it in the file (batchnorm_forward has two) is. A forward that computes
  in float32 has no exact gradient to compare with: not consistent.
* stage names the step of the cs231n graph the mistake changes: forward mu, xmu, sq, var, sqrtvar, ivar, xhat,
  gammax, out; backward dbeta, dgamma, dxhat, divar, dxmu1, dsqrtvar, dvar, dsq, dxmu2, dx1, dmu, dx2, dx; and
  "running" for the running averages (and test-mode use of them). Inherited mistakes keep the forward's stage.

GROUPNORM_GAMMA gives, for every file with a group norm, the shape its gamma / beta (and so dgamma / dbeta)
have: "(1, C, 1, 1)" (older assignment) or "(C,)" (newer). Spatial batch norm always uses (C,).

EXAMPLE holds the same for examples/cs231n_layers.py (path relative to the repository root): exactly three
functions with one mistake each, all six others correct.
"""


def _ok(consistent=True):
    return dict(correct=True, mistakes=[], wrong=(), consistent=consistent)


def _bug(wrong, consistent, *mistakes):
    return dict(
        correct=False,
        mistakes=[dict(category=c, stage=s, words=w) for c, s, w in mistakes],
        wrong=tuple(wrong),
        consistent=consistent,
    )


# --- recurring sentences -------------------------------------------------------------------------------------

_S03_KEEPDIMS_RUNNING = (
    "other",
    "running",
    "The batch mean and variance are taken with keepdims=True, so running_mean and running_var come out with "
    "shape (1, D) instead of (D,).",
)
_S03_KEEPDIMS_AFFINE = (
    "affine_keepdims",
    "dgamma",
    "dgamma and dbeta are summed with keepdims=True and returned as (1, D) arrays; they must have gamma's shape (D,).",
)
_S03_NO_TRANSPOSE = (
    "stats_axes",
    "mu",
    "x.reshape(-1, C) on an (N, C, H, W) array does not move C last, so each column mixes channels and "
    "positions; transpose to (N, H, W, C) before reshaping to (N*H*W, C).",
)

_S04_STD_EPS = (
    "eps_outside_sqrt",
    "sqrtvar",
    "eps is added to the standard deviation (np.std(x) + eps) instead of inside the square root, sqrt(var + eps).",
)
_S04_INHERITED_BN = (
    "eps_outside_sqrt",
    "sqrtvar",
    "Inherited from batchnorm_forward: the cached std is np.std(x) + eps, which the backward treats as "
    "sqrt(var + eps), so x_hat and the gradient are both off.",
)
_S04_INHERITED_LN = (
    "eps_outside_sqrt",
    "sqrtvar",
    "Inherited from layernorm_forward: the cached std is x.std(axis=1) + eps, which the backward treats as "
    "sqrt(var + eps).",
)
_S04_GN_DDOF = (
    "var_divisor",
    "var",
    "std(ddof=1) divides the group's variance by M - 1; batch/layer/group norm use the biased variance (divide by M).",
)

_S05_NO_MEAN = (
    "no_mean_path",
    "dmu",
    "The backward stops where the two branches of x - mu meet: the gradient through mu (dmu spread back as "
    "dmu / N) is never added to dx.",
)

_S06_UNBIASED = (
    "running_unbiased",
    "running",
    "running_var is updated with the unbiased N / (N - 1) * var; cs231n (and the test) use the biased batch "
    "variance for the running average.",
)
_S06_NO_GAMMA = (
    "gamma_missing",
    "dxhat",
    "The closed form leaves out gamma: dx must be scaled by gamma (dx_hat = dout * gamma).",
)
_S06_PER_PIXEL = (
    "stats_axes",
    "mu",
    "Running layer norm on (N*H*W, C // G) slices normalizes every pixel over the group's channels only; group "
    "norm takes the statistics over the group's channels and all of H, W.",
)

_S08_MOMENTUM = (
    "running_momentum",
    "running",
    "The momentum convention is flipped: it must be momentum * running + (1 - momentum) * batch value, not "
    "(1 - momentum) * running + momentum * batch value.",
)

_S09_DIVISOR = (
    "backward_divisor",
    "dx",
    "N, D = dout.shape and then D is used in the closed form where the batch size N belongs.",
)
_S09_NO_EPS = (
    "eps_missing",
    "sqrtvar",
    "ln_param's eps is never used: std = np.sqrt(var) instead of np.sqrt(var + eps).",
)
_S09_INSTANCE = (
    "consistent_other_norm",
    "mu",
    "Statistics over axes (3, 4) of the (N, G, C // G, H, W) view are per (sample, channel): this is instance "
    "norm, not group norm; axis 2 belongs in the reduction.",
)

_S10_NOT_STORED = (
    "running_not_stored",
    "running",
    "running_mean / running_var are updated in local variables and never written back into bn_param.",
)
_S10_MEAN_N = (
    "mean_divisor",
    "mu",
    "The row mean divides by N (copied from batch norm) instead of the number of features D.",
)
_S10_AXIS0 = (
    "stats_axes",
    "mu",
    "Statistics over axis 0 only give one mean and variance per (c, h, w); spatial batch norm needs one per "
    "channel, over axes (0, 2, 3).",
)
_S10_GN_BATCH = (
    "stats_axes",
    "mu",
    "The group statistics include the batch axis, axis=(0, 2, 3, 4); group norm is per sample: axis=(2, 3, 4).",
)

_S11_TEST = (
    "test_mode_batch_stats",
    "running",
    "In test mode the layer normalizes with the test batch's own mean and variance instead of running_mean and "
    "running_var.",
)
_S11_SIGN = (
    "sign",
    "dsqrtvar",
    "d(1/s)/ds is -1/s**2; the minus sign is missing in dsqrtvar.",
)

_S12_DDOF = (
    "var_divisor",
    "var",
    "var(ddof=1) is the unbiased sample variance (divide by M - 1); batch norm normalizes with the biased one.",
)
_S12_INHERITED = (
    "var_divisor",
    "var",
    "Inherited from batchnorm_forward: the cached 1 / std comes from var(ddof=1), while the backward formula "
    "assumes the biased variance.",
)
_S12_GROUPS = (
    "groups_layout",
    "mu",
    "reshape(N * C // G, -1) makes C // G groups of G channels each instead of G groups of C // G channels.",
)


STUDENTS = {
    # Entirely correct, staged graph, tuple caches, group norm gamma (1, C, 1, 1).
    "student_01.py": {
        "batchnorm_forward": _ok(),
        "batchnorm_backward": _ok(),
        "batchnorm_backward_alt": _ok(),
        "layernorm_forward": _ok(),
        "layernorm_backward": _ok(),
        "spatial_batchnorm_forward": _ok(),
        "spatial_batchnorm_backward": _ok(),
        "spatial_groupnorm_forward": _ok(),
        "spatial_groupnorm_backward": _ok(),
    },
    # Entirely correct, compact, dict caches, layer norm = batch norm of x.T, group norm via (N*G, -1), gamma (C,).
    "student_02.py": {
        "batchnorm_forward": _ok(),
        "batchnorm_backward": _ok(),
        "batchnorm_backward_alt": _ok(),
        "layernorm_forward": _ok(),
        "layernorm_backward": _ok(),
        "spatial_batchnorm_forward": _ok(),
        "spatial_batchnorm_backward": _ok(),
        "spatial_groupnorm_forward": _ok(),
        "spatial_groupnorm_backward": _ok(),
    },
    # keepdims=True everywhere; spatial batch norm reshapes without moving C last; no group norm.
    "student_03.py": {
        "batchnorm_forward": _bug(("running_mean", "running_var"), True, _S03_KEEPDIMS_RUNNING),
        "batchnorm_backward": _bug(("dgamma", "dbeta"), True, _S03_KEEPDIMS_AFFINE),
        "batchnorm_backward_alt": _bug(("dgamma", "dbeta"), True, _S03_KEEPDIMS_AFFINE),
        "layernorm_forward": _ok(consistent=False),
        "layernorm_backward": _bug(
            ("dx", "dgamma", "dbeta"),
            False,
            (
                "gamma_outside_sum",
                "dxhat",
                "gamma is pulled out of the row sums as in batchnorm_backward_alt, but in layer norm gamma varies "
                "along axis 1: the sums must be over dout * gamma.",
            ),
            _S03_KEEPDIMS_AFFINE,
        ),
        "spatial_batchnorm_forward": _bug(
            ("y", "running_mean", "running_var"),
            True,
            _S03_NO_TRANSPOSE,
            ("other", "running", "Inherited from batchnorm_forward: " + _S03_KEEPDIMS_RUNNING[2]),
        ),
        "spatial_batchnorm_backward": _bug(
            ("dx", "dgamma", "dbeta"),
            True,
            _S03_NO_TRANSPOSE,
            ("affine_keepdims", "dgamma", "Inherited from batchnorm_backward: " + _S03_KEEPDIMS_AFFINE[2]),
        ),
    },
    # np.std(x) + eps everywhere (and std(ddof=1) in group norm); backwards written for sqrt(var + eps).
    "student_04.py": {
        "batchnorm_forward": _bug(("y",), False, _S04_STD_EPS),
        "batchnorm_backward": _bug(("dx", "dgamma"), False, _S04_INHERITED_BN),
        "batchnorm_backward_alt": _bug(("dx", "dgamma"), False, _S04_INHERITED_BN),
        "layernorm_forward": _bug(("y",), False, _S04_STD_EPS),
        "layernorm_backward": _bug(("dx", "dgamma"), False, _S04_INHERITED_LN),
        "spatial_batchnorm_forward": _bug(
            ("y",), False, ("eps_outside_sqrt", "sqrtvar", "Inherited from batchnorm_forward: " + _S04_STD_EPS[2])
        ),
        "spatial_batchnorm_backward": _bug(("dx", "dgamma"), False, _S04_INHERITED_BN),
        "spatial_groupnorm_forward": _bug(("y",), False, _S04_GN_DDOF, _S04_STD_EPS),
        "spatial_groupnorm_backward": _bug(
            ("dx", "dgamma"),
            False,
            ("var_divisor", "var", "Inherited from spatial_groupnorm_forward: " + _S04_GN_DDOF[2]),
            (
                "eps_outside_sqrt",
                "sqrtvar",
                "Inherited from spatial_groupnorm_forward: the cached std is std(ddof=1) + eps, which the closed "
                "form treats as sqrt(var + eps).",
            ),
        ),
    },
    # Verbose staged graph; staged backward without the mean path; "layer norm" that is batch norm.
    "student_05.py": {
        "batchnorm_forward": _ok(consistent=False),
        "batchnorm_backward": _bug(("dx",), False, _S05_NO_MEAN),
        "batchnorm_backward_alt": _ok(),
        "layernorm_forward": _bug(
            ("y",),
            True,
            (
                "consistent_other_norm",
                "mu",
                "Copied from batchnorm_forward with the statistics still over axis 0 (the batch): this is batch "
                "norm, not layer norm, which normalizes every row over its D features (axis 1).",
            ),
        ),
        "layernorm_backward": _bug(
            ("dx", "dgamma"),
            True,
            (
                "consistent_other_norm",
                "dx",
                "The exact gradient of the file's layer norm, which is batch norm (sums over axis 0): right for "
                "that norm, wrong for layer norm.",
            ),
        ),
        "spatial_batchnorm_forward": _ok(consistent=False),
        "spatial_batchnorm_backward": _bug(
            ("dx",), False, ("no_mean_path", "dmu", "Inherited from batchnorm_backward: " + _S05_NO_MEAN[2])
        ),
    },
    # Paper's unbiased running variance; alt backward without gamma; group norm per pixel via layer norm slices.
    "student_06.py": {
        "batchnorm_forward": _bug(("running_var",), False, _S06_UNBIASED),
        "batchnorm_backward": _ok(),
        "batchnorm_backward_alt": _bug(("dx",), False, _S06_NO_GAMMA),
        "layernorm_forward": _ok(),
        "layernorm_backward": _ok(),
        "spatial_batchnorm_forward": _bug(
            ("running_var",),
            False,
            ("running_unbiased", "running", "Inherited from batchnorm_forward: " + _S06_UNBIASED[2]),
        ),
        "spatial_batchnorm_backward": _bug(
            ("dx",), False, ("gamma_missing", "dxhat", "Inherited from batchnorm_backward_alt: " + _S06_NO_GAMMA[2])
        ),
        "spatial_groupnorm_forward": _bug(("y",), True, _S06_PER_PIXEL),
        "spatial_groupnorm_backward": _bug(
            ("dx", "dgamma"),
            True,
            (
                "stats_axes",
                "mu",
                "The exact gradient of the per-pixel forward (layernorm_backward on the same slices): "
                + _S06_PER_PIXEL[2],
            ),
        ),
    },
    # Copy-paste slips: missing factor 2, layer norm backward with batch-norm axes, channels grouped as c % G.
    "student_07.py": {
        "batchnorm_forward": _ok(consistent=False),
        "batchnorm_backward": _bug(
            ("dx",),
            False,
            ("factor", "dxmu2", "The derivative of xmu**2 is 2 * xmu; the factor 2 is missing in dxmu2."),
        ),
        "batchnorm_backward_alt": _ok(),
        "layernorm_forward": _ok(consistent=False),
        "layernorm_backward": _bug(
            ("dx",),
            False,
            (
                "stats_axes",
                "divar",
                "divar and dmu are still summed over axis 0 as in batch norm; the layer norm statistics are per "
                "row, so these sums must run over axis 1 (keepdims=True).",
            ),
        ),
        "spatial_batchnorm_forward": _ok(),
        "spatial_batchnorm_backward": _ok(),
        "spatial_groupnorm_forward": _bug(
            ("y",),
            True,
            (
                "groups_layout",
                "mu",
                "reshape(N, C // G, G, H, W) with statistics over axes (1, 3, 4) puts channel c in group c % G; "
                "groups are consecutive channels: reshape(N, G, C // G, H, W), axes (2, 3, 4).",
            ),
        ),
        "spatial_groupnorm_backward": _bug(
            ("dx", "dgamma"),
            True,
            (
                "groups_layout",
                "mu",
                "Same (N, C // G, G, H, W) view as the forward: the exact gradient of the interleaved grouping, "
                "channel c in group c % G.",
            ),
        ),
    },
    # Momentum flipped (twice); paper-style backward with a wrong exponent; alt without the variance path;
    # a hand-written spatial backward dividing by N instead of N*H*W; no group norm.
    "student_08.py": {
        "batchnorm_forward": _bug(("running_mean", "running_var"), False, _S08_MOMENTUM),
        "batchnorm_backward": _bug(
            ("dx",),
            False,
            ("exponent", "dvar", "d(var + eps)**-0.5 / dvar is -0.5 * (var + eps)**-1.5; the exponent is -0.5."),
        ),
        "batchnorm_backward_alt": _bug(
            ("dx",),
            False,
            (
                "no_var_path",
                "dvar",
                "dx = gamma / std * (dout - mean(dout)) drops the path through the variance, the "
                "- x_hat * mean(dout * x_hat) term.",
            ),
        ),
        "layernorm_forward": _ok(),
        "layernorm_backward": _ok(),
        "spatial_batchnorm_forward": _bug(("running_mean", "running_var"), False, _S08_MOMENTUM),
        "spatial_batchnorm_backward": _bug(
            ("dx",),
            False,
            (
                "backward_divisor",
                "dx",
                "The channel statistics are over N*H*W values, but the closed form divides by N (the batch size).",
            ),
        ),
    },
    # dgamma from dout * gamma; D for N in the closed form; layer norm without eps; "group norm" = instance norm.
    "student_09.py": {
        "batchnorm_forward": _ok(consistent=False),
        "batchnorm_backward": _bug(
            ("dgamma",),
            False,
            (
                "gamma_misplaced",
                "dgamma",
                "dgamma is summed from dx_norm = dout * gamma, so gamma multiplies its own gradient; it must be "
                "sum(dout * x_norm).",
            ),
        ),
        "batchnorm_backward_alt": _bug(("dx",), False, _S09_DIVISOR),
        "layernorm_forward": _bug(("y",), True, _S09_NO_EPS),
        "layernorm_backward": _bug(
            ("dx", "dgamma"),
            True,
            ("eps_missing", "sqrtvar", "Inherited from layernorm_forward: " + _S09_NO_EPS[2]),
        ),
        "spatial_batchnorm_forward": _ok(consistent=False),
        "spatial_batchnorm_backward": _bug(
            ("dx",), False, ("backward_divisor", "dx", "Inherited from batchnorm_backward_alt: " + _S09_DIVISOR[2])
        ),
        "spatial_groupnorm_forward": _bug(("y",), True, _S09_INSTANCE),
        "spatial_groupnorm_backward": _bug(
            ("dx", "dgamma"),
            True,
            (
                "consistent_other_norm",
                "dx",
                "Sums over axes (3, 4) with M = H * W: the exact gradient of instance norm, which is what the "
                "forward computes, not of group norm.",
            ),
        ),
    },
    # Running averages never stored; layer norm mean divided by N; spatial "batch norm" over axis 0 only;
    # group norm with the batch axis in its statistics and gamma pulled out of the group sums.
    "student_10.py": {
        "batchnorm_forward": _bug(("running_mean", "running_var"), True, _S10_NOT_STORED),
        "batchnorm_backward": _ok(),
        "batchnorm_backward_alt": _ok(),
        "layernorm_forward": _bug(("y",), False, _S10_MEAN_N),
        "layernorm_backward": _bug(
            ("dx", "dgamma"),
            False,
            (
                "mean_divisor",
                "mu",
                "Inherited from layernorm_forward: the cached x_hat is centered on sum(x) / N, not the row mean, "
                "so the closed form (which assumes mean(x_hat) = 0) no longer applies.",
            ),
        ),
        "spatial_batchnorm_forward": _bug(("y", "running_mean", "running_var"), True, _S10_AXIS0, _S10_NOT_STORED),
        "spatial_batchnorm_backward": _bug(
            ("dx", "dgamma"),
            True,
            (
                "stats_axes",
                "mu",
                "The backward sums over axis 0 only, the exact gradient of the per-(c, h, w) forward: " + _S10_AXIS0[2],
            ),
        ),
        "spatial_groupnorm_forward": _bug(("y",), False, _S10_GN_BATCH),
        "spatial_groupnorm_backward": _bug(
            ("dx", "dgamma"),
            False,
            (
                "gamma_outside_sum",
                "dxhat",
                "gamma is applied after the group sums, but it varies over the channels of a group: the sums must "
                "be over dout * gamma.",
            ),
            (
                "stats_axes",
                "mu",
                "Inherited from spatial_groupnorm_forward: the cache holds statistics over (0, 2, 3, 4) while this "
                "backward differentiates per-sample statistics.",
            ),
        ),
    },
    # Test mode on batch statistics; minus sign lost in dsqrtvar; layer norm dgamma/dbeta over axis 1;
    # group norm loop writing into a float32 buffer.
    "student_11.py": {
        "batchnorm_forward": _bug(("y",), False, _S11_TEST),
        "batchnorm_backward": _bug(("dx",), False, _S11_SIGN),
        "batchnorm_backward_alt": _ok(),
        "layernorm_forward": _ok(consistent=False),
        "layernorm_backward": _bug(
            ("dgamma", "dbeta"),
            False,
            (
                "dgamma_axes",
                "dgamma",
                "dgamma is summed over axis 1 like the statistics; gamma is per feature, so sum over axis 0.",
            ),
            ("dbeta_axes", "dbeta", "dbeta is summed over axis 1; beta is per feature, so sum over axis 0."),
        ),
        "spatial_batchnorm_forward": _bug(
            ("y",), False, ("test_mode_batch_stats", "running", "Inherited from batchnorm_forward: " + _S11_TEST[2])
        ),
        "spatial_batchnorm_backward": _bug(
            ("dx",), False, ("sign", "dsqrtvar", "Inherited from batchnorm_backward: " + _S11_SIGN[2])
        ),
        "spatial_groupnorm_forward": _bug(
            ("y",),
            False,
            (
                "float32",
                "out",
                "x_hat is written into an out buffer preallocated with dtype=np.float32 before gamma and beta are "
                "applied, so the normalized values are rounded to float32 although x is float64; allocate it with "
                "x's dtype (np.zeros_like(x)).",
            ),
        ),
        "spatial_groupnorm_backward": _ok(consistent=False),
    },
    # Unbiased variance (ddof=1) in batch norm and spatial batch norm; layer norm backward left unfinished;
    # dbeta summed over axis 0 only; group norm with C // G groups; gamma (1, C, 1, 1).
    "student_12.py": {
        "batchnorm_forward": _bug(("y", "running_var"), False, _S12_DDOF),
        "batchnorm_backward": _bug(("dx", "dgamma"), False, _S12_INHERITED),
        "batchnorm_backward_alt": _bug(("dx", "dgamma"), False, _S12_INHERITED),
        "layernorm_forward": _ok(consistent=False),
        "layernorm_backward": _bug(
            ("dx", "dgamma"),
            False,
            (
                "unfinished_backward",
                "dx",
                "Left unfinished: dx = dout * gamma / std has only the direct path (no mean or variance terms) "
                "and dgamma is still None.",
            ),
        ),
        "spatial_batchnorm_forward": _bug(("y", "running_var"), False, _S12_DDOF),
        "spatial_batchnorm_backward": _bug(
            ("dx", "dgamma", "dbeta"),
            False,
            (
                "dbeta_axes",
                "dbeta",
                "dbeta = np.sum(dout, axis=0) keeps (C, H, W); beta is per channel: sum over axes (0, 2, 3).",
            ),
            (
                "var_divisor",
                "var",
                "Inherited from spatial_batchnorm_forward: the cached std comes from var(ddof=1) while the closed "
                "form assumes the biased variance.",
            ),
        ),
        "spatial_groupnorm_forward": _bug(("y",), True, _S12_GROUPS),
        "spatial_groupnorm_backward": _bug(
            ("dx", "dgamma"),
            True,
            ("groups_layout", "mu", "Same (N * C // G, -1) rows as the forward: " + _S12_GROUPS[2]),
        ),
    },
}

GROUPNORM_GAMMA = {
    "student_01.py": "(1, C, 1, 1)",
    "student_02.py": "(C,)",
    "student_04.py": "(C,)",
    "student_06.py": "(1, C, 1, 1)",
    "student_07.py": "(C,)",
    "student_09.py": "(1, C, 1, 1)",
    "student_10.py": "(C,)",
    "student_11.py": "(C,)",
    "student_12.py": "(1, C, 1, 1)",
}

EXAMPLE = {
    "examples/cs231n_layers.py": {
        "batchnorm_forward": _ok(),
        "batchnorm_backward": _ok(),
        "batchnorm_backward_alt": _ok(),
        "layernorm_forward": _ok(consistent=False),
        "layernorm_backward": _bug(
            ("dx",),
            False,
            (
                "gamma_outside_sum",
                "dxhat",
                "gamma is taken out of the per-row means, but in layer norm it varies along the row: the means "
                "must be of dout * gamma.",
            ),
        ),
        "spatial_batchnorm_forward": _bug(
            ("running_mean", "running_var"),
            True,
            (
                "running_not_stored",
                "running",
                "batchnorm_forward gets a copy of bn_param, so the updated running averages never reach the "
                "caller's bn_param.",
            ),
        ),
        "spatial_batchnorm_backward": _ok(),
        "spatial_groupnorm_forward": _bug(
            ("y",),
            False,
            (
                "groups_layout",
                "mu",
                "reshape(N, C // G, G, H, W) with statistics over axes (1, 3, 4) puts channel c in group c % G "
                "instead of G blocks of C // G consecutive channels.",
            ),
        ),
        "spatial_groupnorm_backward": _ok(consistent=False),
    },
}

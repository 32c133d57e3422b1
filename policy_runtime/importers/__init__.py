"""Policies trained elsewhere, turned into our checkpoints (``prt import``): ``prt export`` and
``prt eval`` then work on them unchanged. One module per source format; torch, like training
(the deploy path never imports these).

:mod:`policy_runtime.importers.diffusion_policy`: Diffusion Policy's ``.ckpt`` files (behind an
explicit trust flag: they are pickles, unpickled only in a child process).
:mod:`policy_runtime.importers.lerobot`: LeRobot diffusion policies (``save_pretrained``
directories; JSON and safetensors only).
"""

"""What makes jtransfer fast on a CPU, in one room; nothing here changes a result.

    from jtransfer.cpu import conv, hostmem
    hostmem.reuse_freed_memory()          # first thing in a process that will run XLA:CPU
    y = conv.conv(x, kernel, strides=(1, 1), padding=((1, 1), (1, 1)), plan=conv.ConvPlan(...))

- ``conv``: the convolution both model families use when ``model.conv_impl`` is not 'xla': a
  ``custom_vjp`` choosing XLA's, a patches-as-matmul or oneDNN's formulation per direction and
  shape (``conv_impl_rule``); equal to XLA's convolution within float32 rounding (tests).
- ``pool``: max pooling over its window taps, forward and gradient (the ResNet stem's pool).
- ``onednn`` / ``onednn_build`` / ``onednn_conv.cc``: the optional oneDNN extension (XLA FFI
  handlers), its loading and its build (``make onednn``).
- ``hostmem``: the malloc policy that lets XLA:CPU reuse its per-step buffers.

A choice among these is an execution option (``model.conv_impl``, ``depthwise_impl``: role
'execution' in ``train/fields.py``): a run resumes, and its weights move, under another one or on
another device. docs/speed.md has the measurements.
"""

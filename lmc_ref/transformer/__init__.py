"""The paper's byte transformer, one module per layer of the stack.

* ``model``            configurations, weights, the readable NumPy forward (a leaf);
* ``checkpoint``       ``.npz`` save and load without pickle, and the weights' hash;
* ``infer_cpu``        the per-position coding kernel with a KV cache (Numba, exact);
* ``infer_cuda``       the same contract on numba.cuda, many chunks per launch;
* ``backprop``         hand-written backward passes (+ ``backprop_kernels``);
* ``train``            Adam, the learning-rate schedule, ``lmc-ref train``.

``lmc_ref.predictors.transformer`` adapts a checkpoint to the predictor protocol.
"""

"""The methods of tensorlite.Tensor beyond its core, by concern: operators.py (operators,
elementwise math, reductions), shape.py (views, indexing, in-place writes), selection.py
(sort, topk, multinomial), linalg.py (norm, bmm, isclose; einsum) and creation.py (new_*).
Each is a mixin that tensorlite/tensor.py composes into the one Tensor class; none imports
tensorlite.tensor, so the layers keep pointing down (tests/test_import_layers.py)."""

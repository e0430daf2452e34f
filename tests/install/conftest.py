"""Install tests. The operator e2e test reuses the controller's e2e fixtures
(tests/e2e/conftest.py): `operator_factory` accepts extra `agentreg run` flags, and a second
`--kubeconfig` (the chart ServiceAccount's token) overrides the admin one it passes first."""

from e2e.conftest import crds, kubectl, operator_factory  # noqa: F401  (fixtures, re-exported)

"""Behavior effects from every agent's record at once: a random-effects (GLS) fit.

Each agent contributes its cells (log-odds on each behavior it ran) with the covariance the
model gives them: skill shared by all of one agent's cells, interaction and sampling noise
not. So an agent seen on two behaviors says how they compare *on the same agent*, and counts
for more than two agents seen on one each. Two biases of pooled fleet counts go away:

- survivorship: agents a behavior did not suit leave it, its stayers' pooled rate flatters
  it; here the leavers' cells (their history) still count, one agent one vote;
- confounding: a behavior run by strong agents looks good pooled; here an agent's cells on
  other behaviors place its skill.

The price is staleness (history cells are old), which is why the policy also asks the
current-evidence analysis, which this fit does not feed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent_registry.decisions.policy_model import FLAT, Components, Normal

Matrix = list[list[float]]


def _contribution(
    cells: Mapping[str, Normal], index: Mapping[str, int], components: Components
) -> tuple[dict[tuple[int, int], float], dict[int, float]]:
    """X' V^-1 X and X' V^-1 y of one agent, V = skill 11' + diag(interaction + noise),
    inverted by Sherman-Morrison (no matrix to factor)."""
    names = [n for n in cells if n in index]
    g = {n: 1.0 / (components.interaction + cells[n].variance) for n in names}
    c = components.skill / (1.0 + components.skill * sum(g.values()))
    gram: dict[tuple[int, int], float] = {}
    rhs: dict[int, float] = {}
    for j in names:
        total = 0.0
        for k in names:
            v = (g[j] if j == k else 0.0) - c * g[j] * g[k]
            gram[(index[j], index[k])] = v
            total += v * cells[k].mean
        rhs[index[j]] = total
    return gram, rhs


def _solve(gram: Matrix, rhs: list[float]) -> tuple[list[float], list[float]] | None:
    """Solution and diagonal of the inverse, by Gauss-Jordan with partial pivoting; None
    when singular."""
    n = len(rhs)
    a = [
        row[:] + [rhs[i]] + [1.0 if i == j else 0.0 for j in range(n)] for i, row in enumerate(gram)
    ]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-12:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        inv = 1.0 / a[col][col]
        a[col] = [v * inv for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0.0:
                factor = a[r][col]
                a[r] = [v - factor * p for v, p in zip(a[r], a[col], strict=True)]
    return [a[i][n] for i in range(n)], [a[i][n + 1 + i] for i in range(n)]


@dataclass(frozen=True)
class RecordFit:
    """The fit over all agents; `effects(without=i)` refits without agent i's cells, so an
    agent's own record is never also the evidence about its behaviors' typical agent."""

    behaviors: tuple[str, ...]
    gram: Matrix
    rhs: list[float]
    agents: Sequence[Mapping[str, Normal]]
    components: Components
    # Per behavior, how many agents have a cell on it: an agent left out subtracts its own,
    # rather than every refit counting all agents again (quadratic in the fleet: 22 s for
    # 10,000 agents of one role before).
    present: Mapping[str, int]

    @staticmethod
    def build(agents: Sequence[Mapping[str, Normal]], components: Components) -> RecordFit:
        behaviors = tuple(sorted({n for cells in agents for n in cells}))
        index = {n: i for i, n in enumerate(behaviors)}
        gram = [[0.0] * len(behaviors) for _ in behaviors]
        rhs = [0.0] * len(behaviors)
        present = dict.fromkeys(behaviors, 0)
        for cells in agents:
            g, r = _contribution(cells, index, components)
            for (j, k), v in g.items():
                gram[j][k] += v
            for j, v in r.items():
                rhs[j] += v
            for n in cells:
                present[n] += 1
        return RecordFit(behaviors, gram, rhs, agents, components, present)

    def effects(self, without: int | None = None) -> dict[str, Normal]:
        index = {n: i for i, n in enumerate(self.behaviors)}
        gram = [row[:] for row in self.gram]
        rhs = self.rhs[:]
        present = dict(self.present)
        if without is not None:
            for n in self.agents[without]:
                present[n] -= 1
            g, r = _contribution(self.agents[without], index, self.components)
            for (j, k), v in g.items():
                gram[j][k] -= v
            for j, v in r.items():
                rhs[j] -= v
        # A behavior nobody else ran has no row to solve for: it gets the flat prior.
        keep = [index[n] for n in self.behaviors if present[n]]
        solved = _solve([[gram[j][k] for k in keep] for j in keep], [rhs[j] for j in keep])
        effects = {n: Normal(0.0, FLAT) for n in self.behaviors}
        if solved is not None:
            means, variances = solved
            for slot, j in enumerate(keep):
                effects[self.behaviors[j]] = Normal(means[slot], max(variances[slot], 0.0))
        return effects


__all__ = ["RecordFit"]

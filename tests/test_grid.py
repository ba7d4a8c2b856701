"""The torus grid: von Neumann neighbourhoods and cell blocks."""

from __future__ import annotations

import pytest

from trainer.grid import Grid, split_cells


def test_neighbourhood_on_3x3_wraps_and_starts_with_the_cell():
    g = Grid(3, 3)
    nb = [g.coords(i) for i in g.neighbourhood(g.index(0, 1))]
    assert nb[0] == (0, 1)
    assert set(nb[1:]) == {(0, 0), (0, 2), (2, 1), (1, 1)}
    assert g.subpopulation_size == 5


@pytest.mark.parametrize("h,w,size", [(2, 2, 3), (1, 1, 1), (1, 3, 3), (1, 2, 2), (2, 3, 4), (4, 5, 5)])
def test_small_grids_dedupe_and_all_cells_share_one_size(h, w, size):
    g = Grid(h, w)
    sizes = {len(g.neighbourhood(i)) for i in range(g.size)}
    assert sizes == {size}
    table = g.neighbour_table()
    assert table.shape == (g.size, size) and (table[:, 0] == table.new_tensor(range(g.size))).all()


def test_no_exchange_means_the_cell_alone():
    assert Grid(3, 3).neighbour_table(exchange=False).shape == (9, 1)


def test_neighbourhood_is_symmetric():
    g = Grid(4, 3)
    for i in range(g.size):
        for j in g.neighbourhood(i):
            assert i in g.neighbourhood(j)


def test_cell_blocks_are_balanced_and_cover_the_grid():
    blocks = [split_cells(10, 3, r) for r in range(3)]
    assert [len(b) for b in blocks] == [4, 3, 3]
    assert [c for b in blocks for c in b] == list(range(10))


def test_grid_refuses_empty():
    with pytest.raises(ValueError):
        Grid(0, 3)

"""Marching-cubes lookup tables in the cell numbering of this package, which reproduces PyMCubes exactly.

The triangulation is the classic 256-case table of Lorensen & Cline, "Marching Cubes: A High Resolution 3D
Surface Construction Algorithm" (SIGGRAPH 1987), as published by Paul Bourke ("Polygonising a scalar
field", 1994) and used by PyMCubes. It is stored here re-indexed so that, with cells visited in C order
(x slowest), the vertices and triangles come out in exactly PyMCubes' order:

- corner ``b`` of the cell at lattice index (i, j, k) is (i + (b >> 2 & 1), j + (b >> 1 & 1), k + (b & 1));
  bit ``b`` of the cell's case is set when the value at corner ``b`` is above the isovalue.
- ``EDGES[e] = (dx, dy, dz, axis)``: local edge ``e`` starts at corner offset (dx, dy, dz) and goes one step
  along ``axis``. The list order is the order in which PyMCubes creates a cell's new vertices.
- ``TRIANGLES[case]``: the triangles of a case as local edge indices, three hex digits per triangle, in
  PyMCubes' order and winding.

Both were read off PyMCubes' output on the 256 single-cube volumes (``derive_from_pymcubes``; run
``python -m toolkit.kernels._mc_tables`` to print them again), and tests/kernels/test_marching_cubes.py checks
them against PyMCubes on every case.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch

EDGES: tuple[tuple[int, int, int, int], ...] = (
    (0, 1, 1, 0), (1, 0, 1, 1), (1, 1, 0, 2), (0, 0, 0, 0), (1, 0, 0, 1), (0, 1, 0, 0),
    (0, 0, 0, 1), (0, 0, 1, 0), (0, 0, 1, 1), (0, 0, 0, 2), (1, 0, 0, 2), (0, 1, 0, 2),
)

# Entry ``case`` lists that case's triangles (see the module docstring).
TRIANGLES: tuple[str, ...] = (
    "", "369", "798", "736876",                                                             # 0-3
    "65b", "35b93b", "b87b75967657", "b87b75573",                                           # 4-7
    "8b0", "8938306b3b03", "079b09", "6b0603307",                                           # 8-11
    "865085", "893830035", "965957750", "357750",                                           # 12-15
    "3a4", "469a49", "7a4748394984", "7a4748846",                                           # 16-19
    "63a6ab45a5ba", "45b4baab9", "a87ab8a4b5b4396", "7b8ab7a5ba45",                         # 20-23
    "3a4b08", "9a0908a40b06460", "9b4943b04a47074", "a07a60a46b06",                         # 24-27
    "50a5a408a3a686a", "45040949a908", "63945a57a507", "47a457507",                         # 28-31
    "a71", "971916a31361", "a981a8", "a36a61168",                                           # 32-35
    "a715b6", "35131a5b1719b91", "81585b1a5659a95", "a81a58a355b8",                         # 36-39
    "01a0ab78a8ba", "31a301360b06978", "01a0abba9", "6b036030131a",                         # 40-43
    "86a8a765a1a050a", "978a31301350", "1a9195150659", "a01a30350",                         # 44-47
    "371431", "971916614", "398384481", "461681",                                           # 48-51
    "37b3b671b5b414b", "5145915b9719", "39645848185b", "b45b84814",                         # 52-55
    "14b1b043b8b737b", "9786b16141b0", "39b3b13141b0", "06b016146",                         # 56-59
    "451150637678", "045014789", "401450639", "401504",                                     # 60-63
    "425", "569592349429", "425987", "682625872423732",                                     # 64-67
    "642b62", "34232992b", "64767942787b2b7", "42b4b747387b",                               # 68-71
    "b54b48204084", "49348942808256b", "07404279454b9b4", "6b5340307042",                   # 72-75
    "208284486", "208428489493", "964940907042", "234203073",                               # 76-79
    "a253a5", "56959229a", "a28a87258983538", "5a258a56887a",                               # 80-83
    "63a6abba2", "a292b9", "3967a8ab8a2b", "7b87aba2b",                                     # 84-87
    "53858b3a8082a28", "56b20929a908", "39559b7a2720", "27a207b56",                         # 88-91
    "3863283a2082", "8208929a2", "7207a2396", "27a072",                                     # 92-95
    "1251574a5a75", "62561269171934a", "a95a54985251815", "a34126168625",                   # 96-99
    "2b7271b67a74647", "34a97292b271", "2812b8a94964", "1b812b4a3",                         # 100-103
    "a54ab5a7b8b7120", "34a78956b120", "1204a5ab5a9b", "34a56b120",                         # 104-107
    "2014a84868a7", "4a3120978", "4964a9120", "a34120",                                     # 108-111
    "125157753", "512615671697", "953915981251", "512561681",                               # 112-115
    "1371b312bb63", "1971292b9", "b12b81963", "b1281b",                                     # 116-119
    "12078575358b", "6b5897201", "b39b53201", "56b201",                                     # 120-123
    "763786012", "120789", "396120", "201",                                                 # 124-127
    "210", "369102", "802829172792", "732721362028682",                                     # 128-131
    "0b6061526216", "b91b10931215351", "679617651215b80", "80b172752735",                   # 132-135
    "b218b1", "b23b36213938183", "17919229b", "17313b1b2b36",                               # 136-139
    "521516618", "935951918215", "521651617679", "152175735",                               # 140-143
    "243230a13103", "46040269010a9a0", "402480438983a17", "a17240480468",                   # 144-147
    "3b630b3a010a452", "452a1bab9b10", "0b84523967a1", "a1724580b",                         # 148-151
    "18313a8b3432b23", "a1991824626b", "7a13949249b2", "26b246a17",                         # 152-155
    "245a13163186", "a89a18245", "6394527a1", "452a17",                                     # 156-159
    "2a7027", "70676902636a2a6", "80282992a", "36838232a028",                               # 160-163
    "2a6265a76b60706", "7b970b35a52a", "0b85262962a9", "5a352a0b8",                         # 164-167
    "78b7baab2", "789a3bab2b36", "a9229b", "6a36bab2a",                                     # 168-171
    "52a5a85868a7", "a52a35978", "5965292a9", "a5235a",                                     # 172-175
    "243230037", "946904970024", "280482498439", "280248468",                               # 176-179
    "45263b30b370", "0970b9524", "4526390b8", "2450b8",                                     # 180-183
    "4b247b4378b7", "6246b2897", "3243929b2", "624b26",                                     # 184-187
    "678637452", "452978", "396452", "452",                                                 # 188-191
    "410540", "419493109695059", "059098549791419", "605680413173",                         # 192-195
    "0b6061164", "3b931b34110b", "b80967617641", "13417380b",                               # 196-199
    "b54b48841", "56b349489418", "54151959b791", "31734156b",                               # 200-203
    "416618", "389348418", "917961641", "317413",                                           # 204-207
    "a10a03305", "19a159105695", "a17390305098", "85680517a",                               # 208-211
    "60b3063103a1", "0a10bab9a", "3967a1b80", "7a180b",                                     # 212-215
    "a18a85a5358b", "8a189a6b5", "3b539b7a1", "a1756b",                                     # 216-219
    "a63a16186", "a8918a", "a17396", "a17",                                                 # 220-223
    "4a7475570", "4a3567570769", "4054904a9980", "58056834a",                               # 224-227
    "a70a06a64b60", "90b970a34", "94a964b80", "34ab80",                                     # 228-231
    "78ba7bab5a54", "a3497856b", "4b54aba9b", "4a356b",                                     # 232-235
    "74a784864", "34a978", "496a94", "34a",                                                 # 236-239
    "375705", "956975705", "839803053", "856058",                                           # 240-243
    "60b630370", "097b90", "639b80", "80b",                                                 # 244-247
    "b78b57537", "9786b5", "3b59b3", "6b5",                                                 # 248-251
    "763867", "789", "396", "",                                                             # 252-255
)


class Tables(NamedTuple):
    """The tables as int32 tensors on one device, for the kernels and the reference."""

    edge_mask: torch.Tensor
    """(256,) bit e set when local edge e is crossed by the surface (its two corners differ)."""
    num_triangles: torch.Tensor
    """(256,) triangles per case (0 to 5)."""
    triangles: torch.Tensor
    """(256, 15) local edges of each case's triangles, row-major, padded with -1."""
    owned_mask: torch.Tensor
    """(8,) edges a cell owns, by boundary code (i == 0) << 2 | (j == 0) << 1 | (k == 0) (see owned_mask)."""
    edge_info: torch.Tensor
    """(12,) local edge packed as dx | dy << 1 | dz << 2 | axis << 3."""
    local_edge: torch.Tensor
    """(24,) local edge index of the edge at corner offset code (dx << 2 | dy << 1 | dz) along axis,
    at entry code * 3 + axis; -1 where no such edge exists."""


def edge_mask(case: int) -> int:
    """Bit mask of the local edges whose two corners are on different sides in ``case``."""
    mask = 0
    for e, (dx, dy, dz, axis) in enumerate(EDGES):
        a = dx << 2 | dy << 1 | dz
        b = a | (4 >> axis)
        if (case >> a & 1) != (case >> b & 1):
            mask |= 1 << e
    return mask


def owned_mask(code: int) -> int:
    """Bit mask of the local edges a cell owns, i.e. for which it is the first cell in C order.

    An edge along ``axis`` belongs to the cells around it; the first of them in C order sits one step back
    along each other axis unless the edge lies on the grid's first plane there. So a cell owns its edge e
    when, for every other axis, the edge's offset is 1 or the cell is at index 0 (``code`` has the bits
    (i == 0) << 2 | (j == 0) << 1 | (k == 0)). Each vertex is created by its edge's owner.
    """
    mask = 0
    for e, (dx, dy, dz, axis) in enumerate(EDGES):
        d = (dx, dy, dz)
        if all(d[b] == 1 or code >> (2 - b) & 1 for b in range(3) if b != axis):
            mask |= 1 << e
    return mask


@functools.lru_cache(maxsize=8)
def tables(device: torch.device | str = "cpu") -> Tables:
    """The lookup tables as int32 tensors on ``device`` (cached)."""
    tri = torch.full((256, 15), -1, dtype=torch.int32)
    for case, entry in enumerate(TRIANGLES):
        tri[case, :len(entry)] = torch.tensor([int(c, 16) for c in entry], dtype=torch.int32)
    local = torch.full((24,), -1, dtype=torch.int32)
    for e, (dx, dy, dz, axis) in enumerate(EDGES):
        local[(dx << 2 | dy << 1 | dz) * 3 + axis] = e
    t = Tables(
        edge_mask=torch.tensor([edge_mask(c) for c in range(256)], dtype=torch.int32),
        num_triangles=torch.tensor([len(e) // 3 for e in TRIANGLES], dtype=torch.int32),
        triangles=tri,
        owned_mask=torch.tensor([owned_mask(c) for c in range(8)], dtype=torch.int32),
        edge_info=torch.tensor([dx | dy << 1 | dz << 2 | axis << 3 for dx, dy, dz, axis in EDGES],
                               dtype=torch.int32),
        local_edge=local,
    )
    return Tables(*(x.to(device) for x in t))


def single_cube(case: int, *, inside: float = 1.0, outside: float = -1.0):
    """(2, 2, 2) float64 numpy volume of one cell in ``case``: corner b is ``inside`` when bit b is set."""
    import numpy as np

    vol = np.full((2, 2, 2), outside, dtype=np.float64)
    for b in range(8):
        if case >> b & 1:
            vol[b >> 2 & 1, b >> 1 & 1, b & 1] = inside
    return vol


def derive_from_pymcubes() -> tuple[tuple[tuple[int, int, int, int], ...], tuple[str, ...]]:
    """Read EDGES and TRIANGLES off PyMCubes' output on the 256 single-cube volumes.

    With corner values +-1 and isovalue 0 each vertex is an edge midpoint, which names its edge. The vertex
    order of all cases together fixes the creation order of the 12 edges; each case's faces, written in
    those edges, are its triangles.
    """
    import mcubes
    import numpy as np

    per_case, before = [], set()
    for case in range(256):
        verts, faces = mcubes.marching_cubes(single_cube(case), 0.0)
        edges = []
        for v in verts:
            axis = int(np.flatnonzero(np.abs(v - np.round(v)) > 1e-9)[0])
            d = [round(float(c)) for c in v]
            d[axis] = 0
            edges.append((*d, axis))
        before |= {(a, b) for i, a in enumerate(edges) for b in edges[i + 1:]}
        per_case.append((edges, faces.astype(np.int64)))
    all_edges = sorted({e for pair in before for e in pair})
    rank = {e: sum((f, e) in before for f in all_edges) for e in all_edges}
    if len(all_edges) != 12 or sorted(rank.values()) != list(range(12)):
        raise RuntimeError("PyMCubes' vertex creation order is not one fixed order of the 12 edges")
    order = tuple(sorted(all_edges, key=rank.get))
    tris = tuple("".join(f"{order.index(edges[i]):x}" for face in faces for i in face)
                 for edges, faces in per_case)
    return order, tris


if __name__ == "__main__":
    derived_edges, derived_tris = derive_from_pymcubes()
    print("EDGES =", derived_edges)
    for start in range(0, 256, 4):
        line = "    " + " ".join(f'"{e}",' for e in derived_tris[start:start + 4])
        print(f"{line:<92}# {start}-{start + 3}")

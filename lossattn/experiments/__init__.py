"""The paper's experiments: Tables 1–5 and Figures 2–3 with the honest protocol, published numbers, reports.

The library does not depend on this package; it is built on it (protocols, engine, models). Entry points:
:func:`~lossattn.experiments.bag_tables.reproduce_table1` / ``reproduce_table2`` (classic MIL, MNIST-bags),
:func:`~lossattn.experiments.table3.reproduce_table3` (CIFAR10-bags),
:func:`~lossattn.experiments.image_tables.reproduce_table4` / ``reproduce_table5`` (ResNet18-MIL),
:func:`~lossattn.experiments.figures.reproduce_figure2` / ``reproduce_figure3`` (instance retrieval).
"""

from lossattn.experiments.bag_tables import reproduce_table1, reproduce_table2
from lossattn.experiments.figures import reproduce_figure2, reproduce_figure3
from lossattn.experiments.image_tables import reproduce_table4, reproduce_table5
from lossattn.experiments.table3 import reproduce_table3

__all__ = [
    "reproduce_figure2",
    "reproduce_figure3",
    "reproduce_table1",
    "reproduce_table2",
    "reproduce_table3",
    "reproduce_table4",
    "reproduce_table5",
]

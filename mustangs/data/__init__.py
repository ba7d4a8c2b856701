"""The datasets (Fashion-MNIST, MNIST, CIFAR-10, image folders, the 2-D toys) and their class names.

May import: mustangs.errors, torch, numpy.
"""

"""The paper's experiments on top of the :mod:`flowvi` library (Rezende & Mohamed 2015, section 6).

The 2-D energies of Figure 3 and their quadrature, the DLGM on binarized MNIST of Table 2 /
Figure 4 with its data, training, evaluation and report, and the ``flowvi`` command line. This
package depends on :mod:`flowvi` and on matplotlib, tqdm and PyYAML (the ``experiments`` extra);
:mod:`flowvi` never imports it.
"""

"""cyclegan_tf: CycleGAN (Zhu et al. 2017) for TensorFlow 2.21+ / Keras 3.

Import the modules you need, e.g. `from cyclegan_tf import generators`; importing the package itself
configures nothing and does not import TensorFlow Datasets.
"""

__version__ = "0.1.0"

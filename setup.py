from setuptools import find_packages, setup

setup(
    name="refvbc",
    version="0.1.0",
    description="Reference implementation of Improved Bayesian Compression (VD + soft weight-sharing)",
    packages=find_packages(include=["refvbc", "refvbc.*"]),
    package_data={},
    python_requires=">=3.9",
    install_requires=["numpy>=1.22", "numba>=0.57", "scipy>=1.8"],
    extras_require={
        "test": ["pytest>=7"],
        "figures": ["matplotlib"],
        "crosscheck": ["torch==2.13.0", "jax"],
        # real-GPU runs of --device cuda (NVIDIA's numba-cuda target with the CUDA 12 toolkit wheels);
        # the CUDA simulator used by the tests needs nothing beyond numba itself
        "cuda": ["numba-cuda[cu12]>=0.20"],
    },
)

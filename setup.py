from setuptools import find_packages, setup

setup(
    name="cadet_d2",
    version="0.1.0",
    description="Multimodal (RGB + thermal + event) object detection with cross-modal fusion on Detectron2",
    packages=find_packages(include=["cadet_d2", "cadet_d2.*"]),
    python_requires=">=3.9",
    # Detectron2 has no PyPI release: `make setup` installs it (tools/install_detectron2.sh).
    install_requires=["torch", "torchvision", "timm", "numpy", "opencv-python-headless", "pycocotools", "tabulate"],
    # Optional: event-camera readers beyond the built-in EVT 2.0/3.0, DAT and NPY ones (AEDAT 4.0,
    # DSEC-style HDF5), and the OpenVINO runtime (tools/export.py --format openvino); requirements.txt
    # pins the versions that `make setup` installs.
    extras_require={"events": ["aedat", "h5py", "hdf5plugin"], "openvino": ["openvino==2026.4.1", "nncf==3.4.0"]},
)

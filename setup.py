from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("==")[0] if line.startswith("torch==") else line  # any torch the user already has
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line and not line.startswith("#")
]

setup(
    name="nbp",
    version="0.1.0",
    description="Semi-autoregressive video generation by next-block prediction",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nbp", "nbp.*"]),
    install_requires=requirements,
    extras_require={"dev": Path(__file__).with_name("requirements-dev.txt").read_text().split()},
    entry_points={"console_scripts": ["nbp = nbp.cli:main"]},
)

"""Run inside the image build: delete each ``package data-directory`` pair listed in the file given (argv[1])."""

import importlib.util
import shutil
import sys
from pathlib import Path

for line in Path(sys.argv[1]).read_text().splitlines():
    package, subdir = line.split()
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        target = Path(location) / subdir
        if target.is_dir():
            shutil.rmtree(target)
            print(f"removed {target}")

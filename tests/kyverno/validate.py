#!/usr/bin/env python3
"""Validates Kyverno ClusterPolicy YAML files against the vendored schema; prints one line per
problem (file: document: path: message) and exits 1 if there is any.

    python3 tests/kyverno/validate.py deploy/kyverno/*.yaml
"""
import json
import pathlib
import sys

import jsonschema
import yaml

schema = json.loads(pathlib.Path(__file__).with_name("clusterpolicy-v1.schema.json").read_text())
validator = jsonschema.Draft202012Validator(schema)
problems = 0
checked = 0
for path in sys.argv[1:]:
    for i, doc in enumerate(yaml.safe_load_all(pathlib.Path(path).read_text())):
        if not isinstance(doc, dict) or doc.get("kind") != "ClusterPolicy":
            continue
        checked += 1
        for top in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            # Under anyOf/oneOf the top error says little; the deepest relevant one says what.
            e = jsonschema.exceptions.best_match([top])
            where = ".".join(str(p) for p in e.absolute_path) or "(top)"
            print(f"{path}: document {i}: {where}: {e.message[:300]}")
            problems += 1
print(f"{checked} ClusterPolicy document(s), {problems} problem(s)")
sys.exit(1 if problems or not checked else 0)

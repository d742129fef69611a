"""Usage: python3 scripts/merge_benchmarks.py benchmarks-<part>.md ...  (file names under docs/)

Fold docs/benchmarks-<part>.md fragments into docs/benchmarks.md: the fragment's '# Title'
becomes '## Title' (every heading demoted one level, so keep code out of fragments: it belongs
in bench/); an existing '## Title' section is replaced."""

import re
import sys
from pathlib import Path

docs = Path(__file__).resolve().parents[1] / "docs"
main = (docs / "benchmarks.md").read_text()
for frag in sys.argv[1:]:
    p = docs / frag
    body = p.read_text().strip("\n")
    body = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", body, flags=re.M)
    title = body.splitlines()[0]
    lines = main.split("\n")
    try:
        i = lines.index(title)
        j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
        lines[i:j] = [*body.split("\n"), ""]
        main = "\n".join(lines)
        print("replaced", title)
    except ValueError:
        main = main.rstrip("\n") + "\n\n" + body + "\n"
        print("appended", title)
    p.unlink()
(docs / "benchmarks.md").write_text(main)

# The rollup listeners keep pre-aggregated statistics current on every write of an event, in
# every process that touches events (web, worker, CLI), so they are installed with the package.
from civicgrid.events import rollups as _rollups  # noqa: F401

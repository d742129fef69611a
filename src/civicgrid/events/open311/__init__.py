"""Open311 GeoReport v2: the intake channel other systems use to report events and follow them.

Spec: http://wiki.open311.org/GeoReport_v2. Services are the catalogue's active sub-categories;
service requests are `Event`s created through `events.service.create_event`.
"""

"""The GeoReport v2 shapes, field for field as the spec names them (JSON keys and XML elements)."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, Field


class Format(enum.StrEnum):
    """The response format, chosen by the path's suffix (`services.json`, `services.xml`)."""

    json = "json"
    xml = "xml"


Datatype = Literal["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"]


class Endpoint(BaseModel):
    specification: str = "http://wiki.open311.org/GeoReport_v2"
    url: str
    changeset: str
    type: Literal["production", "test"] = "production"
    formats: list[str] = Field(default_factory=lambda: ["text/xml", "application/json"])


class Discovery(BaseModel):
    changeset: str
    contact: str
    key_service: str
    endpoints: list[Endpoint]


class Service(BaseModel):
    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: Literal["realtime", "batch", "blackbox"] = "realtime"
    keywords: str
    group: str


class AttributeValue(BaseModel):
    key: str
    name: str


class Attribute(BaseModel):
    variable: bool = True
    code: str
    datatype: Datatype
    required: bool = False
    datatype_description: str | None = None
    order: int
    description: str
    values: list[AttributeValue] = Field(default_factory=list)


class ServiceDefinition(BaseModel):
    service_code: str
    attributes: list[Attribute]


class RequestCreated(BaseModel):
    """One item of the POST response; we never defer, so `service_request_id` is always set."""

    service_request_id: str
    service_notice: str | None = None
    account_id: str | None = None


class ServiceRequest(BaseModel):
    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str | None = None
    service_name: str
    service_code: str
    description: str | None = None
    agency_responsible: str | None = None
    service_notice: str | None = None
    requested_datetime: str
    updated_datetime: str | None = None
    expected_datetime: str | None = None
    address: str | None = None
    address_id: str | None = None
    zipcode: str | None = None
    lat: float
    long: float
    media_url: str | None = None


class RequestToken(BaseModel):
    service_request_id: str
    token: str


class Error(BaseModel):
    code: int
    description: str

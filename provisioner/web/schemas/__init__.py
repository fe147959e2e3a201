"""marshmallow schemas for request and response bodies; request validation lives here.

One module per API area; everything is importable from ``provisioner.web.schemas``.
"""

from provisioner.web.schemas.events import METADATA_MAX_BYTES
from provisioner.web.schemas.events import METADATA_MAX_DEPTH
from provisioner.web.schemas.events import PERCENT
from provisioner.web.schemas.events import EventListEnvelope
from provisioner.web.schemas.events import EventSchema
from provisioner.web.schemas.events import EventStreamQuerySchema
from provisioner.web.schemas.events import EventStreamSchema
from provisioner.web.schemas.events import NodeEventsQuerySchema
from provisioner.web.schemas.events import ReportSchema
from provisioner.web.schemas.events import nesting_depth
from provisioner.web.schemas.fields import CONFIG_NAME
from provisioner.web.schemas.fields import HOSTNAME
from provisioner.web.schemas.fields import STATES
from provisioner.web.schemas.fields import TAG
from provisioner.web.schemas.fields import WORKFLOW_ID
from provisioner.web.schemas.fields import Hostname
from provisioner.web.schemas.fields import IPAddress
from provisioner.web.schemas.fields import MacAddress
from provisioner.web.schemas.fields import MessageSchema
from provisioner.web.schemas.fields import envelope
from provisioner.web.schemas.fields import list_envelope
from provisioner.web.schemas.fields import text
from provisioner.web.schemas.nodes import BootQuerySchema
from provisioner.web.schemas.nodes import HardwareFields
from provisioner.web.schemas.nodes import LastEventSchema
from provisioner.web.schemas.nodes import NodeCreateSchema
from provisioner.web.schemas.nodes import NodeEnvelope
from provisioner.web.schemas.nodes import NodeListEnvelope
from provisioner.web.schemas.nodes import NodeListQuerySchema
from provisioner.web.schemas.nodes import NodeSchema
from provisioner.web.schemas.nodes import NodeUpdateSchema
from provisioner.web.schemas.nodes import ReportTokenEnvelope
from provisioner.web.schemas.nodes import ReportTokenSchema
from provisioner.web.schemas.nodes import StalledFeedSchema
from provisioner.web.schemas.nodes import StalledNodeSchema
from provisioner.web.schemas.nodes import StalledQuerySchema
from provisioner.web.schemas.nodes import StateChangeSchema
from provisioner.web.schemas.nodes import StateLogListEnvelope
from provisioner.web.schemas.nodes import StateLogSchema
from provisioner.web.schemas.nodes import TagsSchema
from provisioner.web.schemas.nodes import load_boot_query
from provisioner.web.schemas.workflows import WorkflowEnvelope
from provisioner.web.schemas.workflows import WorkflowListEnvelope
from provisioner.web.schemas.workflows import WorkflowOutSchema
from provisioner.web.schemas.workflows import WorkflowSchema

__all__ = [
    "BootQuerySchema",
    "load_boot_query",
    "CONFIG_NAME",
    "EventListEnvelope",
    "EventSchema",
    "EventStreamQuerySchema",
    "EventStreamSchema",
    "HOSTNAME",
    "HardwareFields",
    "Hostname",
    "IPAddress",
    "LastEventSchema",
    "METADATA_MAX_BYTES",
    "METADATA_MAX_DEPTH",
    "MacAddress",
    "MessageSchema",
    "NodeCreateSchema",
    "NodeEnvelope",
    "NodeEventsQuerySchema",
    "NodeListEnvelope",
    "NodeListQuerySchema",
    "NodeSchema",
    "NodeUpdateSchema",
    "PERCENT",
    "ReportSchema",
    "ReportTokenEnvelope",
    "ReportTokenSchema",
    "STATES",
    "StalledFeedSchema",
    "StalledNodeSchema",
    "StalledQuerySchema",
    "StateChangeSchema",
    "StateLogListEnvelope",
    "StateLogSchema",
    "TAG",
    "TagsSchema",
    "WORKFLOW_ID",
    "WorkflowEnvelope",
    "WorkflowListEnvelope",
    "WorkflowOutSchema",
    "WorkflowSchema",
    "envelope",
    "list_envelope",
    "nesting_depth",
    "text",
]

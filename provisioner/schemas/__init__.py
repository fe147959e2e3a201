"""marshmallow schemas for request and response bodies; request validation lives here.

One module per API area; everything is importable from ``provisioner.schemas``.
"""

from provisioner.schemas.events import METADATA_MAX_BYTES
from provisioner.schemas.events import METADATA_MAX_DEPTH
from provisioner.schemas.events import PERCENT
from provisioner.schemas.events import EventListEnvelope
from provisioner.schemas.events import EventSchema
from provisioner.schemas.events import EventStreamQuerySchema
from provisioner.schemas.events import EventStreamSchema
from provisioner.schemas.events import NodeEventsQuerySchema
from provisioner.schemas.events import ReportSchema
from provisioner.schemas.events import nesting_depth
from provisioner.schemas.fields import CONFIG_NAME
from provisioner.schemas.fields import HOSTNAME
from provisioner.schemas.fields import STATES
from provisioner.schemas.fields import TAG
from provisioner.schemas.fields import WORKFLOW_ID
from provisioner.schemas.fields import Hostname
from provisioner.schemas.fields import IPAddress
from provisioner.schemas.fields import MacAddress
from provisioner.schemas.fields import MessageSchema
from provisioner.schemas.fields import envelope
from provisioner.schemas.fields import list_envelope
from provisioner.schemas.fields import text
from provisioner.schemas.nodes import BootQuerySchema
from provisioner.schemas.nodes import HardwareFields
from provisioner.schemas.nodes import LastEventSchema
from provisioner.schemas.nodes import NodeCreateSchema
from provisioner.schemas.nodes import NodeEnvelope
from provisioner.schemas.nodes import NodeListEnvelope
from provisioner.schemas.nodes import NodeListQuerySchema
from provisioner.schemas.nodes import NodeSchema
from provisioner.schemas.nodes import NodeUpdateSchema
from provisioner.schemas.nodes import ReportTokenEnvelope
from provisioner.schemas.nodes import ReportTokenSchema
from provisioner.schemas.nodes import StalledFeedSchema
from provisioner.schemas.nodes import StalledNodeSchema
from provisioner.schemas.nodes import StalledQuerySchema
from provisioner.schemas.nodes import StateChangeSchema
from provisioner.schemas.nodes import StateLogListEnvelope
from provisioner.schemas.nodes import StateLogSchema
from provisioner.schemas.nodes import TagsSchema
from provisioner.schemas.workflows import WorkflowEnvelope
from provisioner.schemas.workflows import WorkflowListEnvelope
from provisioner.schemas.workflows import WorkflowOutSchema
from provisioner.schemas.workflows import WorkflowSchema

__all__ = [
    "BootQuerySchema",
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

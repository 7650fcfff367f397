from jobs.models.base import ArvadosModel
from jobs.models.collections import Collection
from jobs.models.executions import Execution, ExecutionState
from jobs.models.jobs import Job, JobState
from jobs.models.links import PERMISSION_LEVELS, Link
from jobs.models.logs import LogChunk
from jobs.models.nodes import Node
from jobs.models.provenance import JobInput, ReuseTally
from jobs.models.repositories import Repository
from jobs.models.reuses import JobReuse
from jobs.models.templates import JobTemplate, Schedule
from jobs.models.users import ApiClientAuthorization, Group, User

__all__ = [
    "PERMISSION_LEVELS",
    "ApiClientAuthorization",
    "ArvadosModel",
    "Collection",
    "Execution",
    "ExecutionState",
    "Group",
    "Job",
    "JobInput",
    "JobReuse",
    "JobState",
    "JobTemplate",
    "Link",
    "LogChunk",
    "Node",
    "Repository",
    "ReuseTally",
    "Schedule",
    "User",
]

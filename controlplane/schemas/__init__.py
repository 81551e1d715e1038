"""Marshmallow schemas of the REST API, one module per resource; flask-smorest turns them
into the OpenAPI document. Views name them through this package (``schemas.BuildSchema``)."""

from __future__ import annotations

from controlplane.schemas.audit import (
    AuditEventSchema,
    AuditQuerySchema,
)
from controlplane.schemas.builds import (
    BuildDetailSchema,
    BuildImageSchema,
    BuildImagesField,
    BuildQuerySchema,
    BuildSchema,
    BuildStepSchema,
    DeploySchema,
    LogLineSchema,
    LogsSchema,
)
from controlplane.schemas.catalog import (
    HOSTS_DESCRIPTION,
    REPLICAS_DESCRIPTION,
    PreviewPasswordSchema,
    ServiceCreateSchema,
    ServicePatchSchema,
    ServiceSchema,
    VariableQuerySchema,
    VariableSchema,
    VariableSetSchema,
)
from controlplane.schemas.common import (
    COMPOSE_KEY,
    ApiErrorSchema,
)
from controlplane.schemas.environments import (
    ApprovalSchema,
    ApproveSchema,
    CurrentDeploymentSchema,
    DeploymentSchema,
    EnvironmentApproveSchema,
    EnvironmentPatchSchema,
    EnvironmentQuerySchema,
    EnvironmentSchema,
    PromotedSchema,
    RollbackSchema,
)
from controlplane.schemas.github import (
    DeliveryDetailSchema,
    DeliveryQuerySchema,
    DeliverySchema,
    InstallationSchema,
    RepositorySchema,
)
from controlplane.schemas.hosts import (
    HostCreateSchema,
    HostDetailSchema,
    HostSchema,
    NewHostSchema,
)
from controlplane.schemas.notifications import (
    NewNotificationTargetSchema,
    NotificationTargetCreateSchema,
    NotificationTargetSchema,
)
from controlplane.schemas.registries import (
    RegistryCreateSchema,
    RegistrySchema,
)
from controlplane.schemas.steps import (
    ArtifactsSchema,
    ClaimedStepSchema,
    DeploymentCreateSchema,
    GitTokenQuerySchema,
    GitTokenSchema,
    HeartbeatSchema,
    ImageSchema,
    RegistryCredentialsSchema,
    StepArtifactsSchema,
    StepClaimSchema,
    StepDeploymentSchema,
    StepFinishedSchema,
    StepResultSchema,
)
from controlplane.schemas.tokens import (
    NewTokenSchema,
    TokenCreateSchema,
    TokenSchema,
)

__all__ = [
    "COMPOSE_KEY",
    "HOSTS_DESCRIPTION",
    "REPLICAS_DESCRIPTION",
    "ApiErrorSchema",
    "ApprovalSchema",
    "ApproveSchema",
    "ArtifactsSchema",
    "AuditEventSchema",
    "AuditQuerySchema",
    "BuildDetailSchema",
    "BuildImageSchema",
    "BuildImagesField",
    "BuildQuerySchema",
    "BuildSchema",
    "BuildStepSchema",
    "ClaimedStepSchema",
    "CurrentDeploymentSchema",
    "DeliveryDetailSchema",
    "DeliveryQuerySchema",
    "DeliverySchema",
    "DeploySchema",
    "DeploymentCreateSchema",
    "DeploymentSchema",
    "EnvironmentApproveSchema",
    "EnvironmentPatchSchema",
    "EnvironmentQuerySchema",
    "EnvironmentSchema",
    "GitTokenQuerySchema",
    "GitTokenSchema",
    "HeartbeatSchema",
    "HostCreateSchema",
    "HostDetailSchema",
    "HostSchema",
    "ImageSchema",
    "InstallationSchema",
    "LogLineSchema",
    "LogsSchema",
    "NewHostSchema",
    "NewNotificationTargetSchema",
    "NewTokenSchema",
    "NotificationTargetCreateSchema",
    "NotificationTargetSchema",
    "PreviewPasswordSchema",
    "PromotedSchema",
    "RegistryCreateSchema",
    "RegistryCredentialsSchema",
    "RegistrySchema",
    "RepositorySchema",
    "RollbackSchema",
    "ServiceCreateSchema",
    "ServicePatchSchema",
    "ServiceSchema",
    "StepArtifactsSchema",
    "StepClaimSchema",
    "StepDeploymentSchema",
    "StepFinishedSchema",
    "StepResultSchema",
    "TokenCreateSchema",
    "TokenSchema",
    "VariableQuerySchema",
    "VariableSchema",
    "VariableSetSchema",
]

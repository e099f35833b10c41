"""The enrolment group API: thin views over `enrollment.services`."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import roles
from accounts.permissions import ActionPermission
from api.ordering import StrictOrderingFilter
from api.schema import error_responses, list_parameters
from enrollment import services
from enrollment.api.serializers import (
    EnrollmentGroupCreateSerializer,
    EnrollmentGroupSerializer,
    EnrollmentGroupUpdateSerializer,
)
from enrollment.errors import EnrollmentGroupNotFound
from enrollment.models import EnrollmentGroup
from kernel.addresses import client_address

# As for devices (devices.api.views): what any call can answer, and what a JSON body adds.
EVERY_CALL = (401, 403, 414, 429, 503)
JSON_BODY = (400, 413, 415)

ORDERING_FIELDS = ["name", "created_at", "updated_at"]

GROUP_ID = OpenApiParameter(
    "id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="the group's id; anything that is not a UUID names no group (404)",
)


class EnrollmentGroupViewSet(mixins.ListModelMixin, viewsets.GenericViewSet[EnrollmentGroup]):
    serializer_class = EnrollmentGroupSerializer
    permission_classes = [ActionPermission]
    action_permissions = {
        "list": roles.VIEW_ENROLLMENT_GROUPS,
        "retrieve": roles.VIEW_ENROLLMENT_GROUPS,
        "create": roles.ADD_ENROLLMENT_GROUPS,
        "partial_update": roles.CHANGE_ENROLLMENT_GROUPS,
        "destroy": roles.DELETE_ENROLLMENT_GROUPS,
    }
    filter_backends = [StrictOrderingFilter]
    ordering_fields = ORDERING_FIELDS
    ordering = ["name"]
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[EnrollmentGroup]:
        return EnrollmentGroup.objects.select_related("created_by")

    def get_object(self) -> EnrollmentGroup:
        try:
            return self.get_queryset().get(pk=uuid.UUID(self.kwargs["pk"]))
        except (ValueError, EnrollmentGroup.DoesNotExist):
            raise EnrollmentGroupNotFound("No enrolment group has this id.") from None

    @extend_schema(
        summary="List enrolment groups",
        parameters=list_parameters(ORDERING_FIELDS),
        responses={200: EnrollmentGroupSerializer(many=True), **error_responses(400, 404, *EVERY_CALL)},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="An enrolment group",
        parameters=[GROUP_ID],
        responses={200: EnrollmentGroupSerializer, **error_responses(404, *EVERY_CALL)},
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(EnrollmentGroupSerializer(self.get_object()).data)

    @extend_schema(
        summary="Add an enrolment group (a manufacturer's CA)",
        description="Devices whose factory certificate this CA vouches for enrol themselves over EST "
        "(simpleenroll), with no operator action. The CA certificate must be a CA (basicConstraints "
        "CA:TRUE) valid now: anything else is 400 invalid_ca_certificate. A name or CA already in a "
        "group is 409 enrollment_group_exists.",
        request=EnrollmentGroupCreateSerializer,
        responses={201: EnrollmentGroupSerializer, **error_responses(*JSON_BODY, 409, *EVERY_CALL)},
    )
    def create(self, request: Request) -> Response:
        payload = EnrollmentGroupCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        fields = payload.validated_data
        group = services.create_enrollment_group(
            name=fields["name"],
            ca_certificate=fields["ca_certificate"],
            allowed_hardware_ids=fields.get("allowed_hardware_ids", []),
            enabled=fields["enabled"],
            actor=request.user,
            address=client_address(request),
        )
        return Response(EnrollmentGroupSerializer(group).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Enable or disable a group, or replace its allow-list",
        parameters=[GROUP_ID],
        request=EnrollmentGroupUpdateSerializer,
        responses={200: EnrollmentGroupSerializer, **error_responses(*JSON_BODY, 404, *EVERY_CALL)},
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        group = self.get_object()
        payload = EnrollmentGroupUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        fields = payload.validated_data
        group = services.update_enrollment_group(
            group,
            enabled=fields.get("enabled"),
            allowed_hardware_ids=fields.get("allowed_hardware_ids"),
            actor=request.user,
            address=client_address(request),
        )
        return Response(EnrollmentGroupSerializer(group).data)

    @extend_schema(
        summary="Delete an enrolment group (its devices keep their certificates)",
        parameters=[GROUP_ID],
        responses={204: None, **error_responses(404, *EVERY_CALL)},
    )
    def destroy(self, request: Request, pk: str) -> Response:
        services.delete_enrollment_group(
            self.get_object(), actor=request.user, address=client_address(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

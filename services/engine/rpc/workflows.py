"""WorkflowService: create, change, get and list workflow definitions and their versions."""

from __future__ import annotations

from discovery.engine.v1 import workflow_service_pb2 as ws
from discovery.engine.v1 import workflow_service_pb2_grpc as ws_grpc

from services.engine.domain.errors import InvalidArgument
from services.engine.rpc import convert
from services.engine.rpc.servicer import Context, Servicer, page_size_of, required_text


class WorkflowServicer(Servicer, ws_grpc.WorkflowServiceServicer):
    async def CreateWorkflow(
        self, request: ws.CreateWorkflowRequest, context: Context
    ) -> ws.CreateWorkflowResponse:
        given = request.workflow
        if given.workflow_id or any(s.step_id for s in given.steps):
            raise InvalidArgument("workflow.workflow_id", "assigned by the engine; leave empty")
        workflow, created = await self._runner.workflows.create(
            given.name,
            given.description,
            convert.step_definitions(given),
            tenant=self._caller(context).tenant,
            input_schema=convert.input_schema(given),
            max_parallel_steps=given.max_parallel_steps,
        )
        return ws.CreateWorkflowResponse(workflow=convert.workflow(workflow), created=created)

    async def UpdateWorkflow(
        self, request: ws.UpdateWorkflowRequest, context: Context
    ) -> ws.UpdateWorkflowResponse:
        given = request.workflow
        if given.workflow_id and given.workflow_id != request.workflow_id:
            raise InvalidArgument("workflow.workflow_id", "assigned by the engine; leave empty")
        if given.version:
            raise InvalidArgument("workflow.version", "assigned by the engine; leave empty")
        for i, step in enumerate(given.steps):
            if step.step_id:
                raise InvalidArgument(
                    f"workflow.steps[{i}].step_id", "assigned by the engine; leave empty"
                )
        workflow, changed = await self._runner.workflows.update(
            required_text(request.workflow_id, "workflow_id"),
            given.name,
            given.description,
            convert.step_definitions(given),
            tenant=self._caller(context).tenant,
            input_schema=convert.input_schema(given),
            max_parallel_steps=given.max_parallel_steps,
        )
        return ws.UpdateWorkflowResponse(workflow=convert.workflow(workflow), changed=changed)

    async def ListWorkflowVersions(
        self, request: ws.ListWorkflowVersionsRequest, context: Context
    ) -> ws.ListWorkflowVersionsResponse:
        page = await self._runner.workflows.versions(
            required_text(request.workflow_id, "workflow_id"),
            tenant=self._caller(context).tenant,
            page_size=page_size_of(request.page_size),
            page_token=request.page_token,
        )
        return ws.ListWorkflowVersionsResponse(
            versions=[convert.workflow(w) for w in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetWorkflow(
        self, request: ws.GetWorkflowRequest, context: Context
    ) -> ws.GetWorkflowResponse:
        workflow = await self._runner.workflows.get(
            required_text(request.workflow_id, "workflow_id"),
            tenant=self._caller(context).tenant,
            version=request.version,
        )
        return ws.GetWorkflowResponse(workflow=convert.workflow(workflow))

    async def ListWorkflows(
        self, request: ws.ListWorkflowsRequest, context: Context
    ) -> ws.ListWorkflowsResponse:
        page = await self._runner.workflows.listing(
            tenant=self._caller(context).tenant,
            page_size=page_size_of(request.page_size),
            page_token=request.page_token,
            name=request.name,
        )
        return ws.ListWorkflowsResponse(
            workflows=[convert.workflow(w) for w in page.items],
            next_page_token=page.next_page_token,
        )

"""WorkflowService: create, get and list workflow definitions."""

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
        workflow = await self._runner.create_workflow(
            given.name,
            given.description,
            convert.step_definitions(given),
            tenant=self._caller(context).tenant,
            input_schema=convert.input_schema(given),
        )
        return ws.CreateWorkflowResponse(workflow=convert.workflow(workflow))

    async def GetWorkflow(
        self, request: ws.GetWorkflowRequest, context: Context
    ) -> ws.GetWorkflowResponse:
        workflow = await self._runner.get_workflow(
            required_text(request.workflow_id, "workflow_id"), tenant=self._caller(context).tenant
        )
        return ws.GetWorkflowResponse(workflow=convert.workflow(workflow))

    async def ListWorkflows(
        self, request: ws.ListWorkflowsRequest, context: Context
    ) -> ws.ListWorkflowsResponse:
        page = await self._runner.list_workflows(
            tenant=self._caller(context).tenant,
            page_size=page_size_of(request.page_size),
            page_token=request.page_token,
            name=request.name,
        )
        return ws.ListWorkflowsResponse(
            workflows=[convert.workflow(w) for w in page.items],
            next_page_token=page.next_page_token,
        )

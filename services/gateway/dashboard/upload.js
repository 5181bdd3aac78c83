// The upload form: a PDF from the file input, read as base64 in the browser, started as
// "Procesar Documentos" (found by name in GET /workflows) with POST execute-async.

import { api } from "./api.js";
import { setText } from "./dom.js";
import { uuid4 } from "./uuid.js";

export const DOCUMENT_WORKFLOW = "Procesar Documentos";

/** The file's bytes as standard, padded base64 (what the gateway checks for). */
function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      const url = String(reader.result);
      resolve(url.slice(url.indexOf(",") + 1));
    });
    reader.addEventListener("error", () => reject(reader.error ?? new Error("unreadable file")));
    reader.readAsDataURL(file);
  });
}

function looksLikePdf(file) {
  return file.type === "application/pdf" || /\.pdf$/i.test(file.name);
}

export function setupUpload({ form, input, button, status, workflowNote }, { onStarted }) {
  let workflow = null;

  function say(text, kind = "info") {
    setText(status, text);
    status.dataset.kind = kind;
  }

  async function findWorkflow() {
    const all = await api.workflows();
    workflow = all.find((w) => w.name === DOCUMENT_WORKFLOW) ?? null;
    if (workflow === null) {
      setText(workflowNote, `No workflow named “${DOCUMENT_WORKFLOW}” yet.`);
      workflowNote.dataset.kind = "error";
    } else {
      setText(workflowNote, `Runs “${workflow.name}” (${workflow.steps.length} steps).`);
      workflowNote.dataset.kind = "info";
    }
    return workflow;
  }

  findWorkflow().catch((error) => {
    setText(workflowNote, `Workflows unavailable: ${error.message}`);
    workflowNote.dataset.kind = "error";
  });

  form.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const file = input.files?.[0];
    if (!file) {
      say("Choose a PDF file first.", "error");
      return;
    }
    if (!looksLikePdf(file)) {
      say(`“${file.name}” is not a PDF.`, "error");
      return;
    }
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const target = workflow ?? (await findWorkflow());
      if (target === null) throw new Error(`there is no “${DOCUMENT_WORKFLOW}” workflow`);
      say(`Reading ${file.name}…`);
      const base64 = await readBase64(file);
      say(`Uploading ${file.name}…`);
      const processId = uuid4();
      const started = await api.executeAsync(
        target.workflow_id,
        {
          base64,
          mime: "application/pdf",
          nombre_documento: file.name,
          uuid_proceso: processId,
          manual: false,
        },
        processId,
      );
      say(`Started ${file.name}.`, "success");
      form.reset();
      onStarted(started.execution_id);
    } catch (error) {
      say(`Not started: ${error.message}`, "error");
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });
}

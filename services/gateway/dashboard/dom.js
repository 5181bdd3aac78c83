// Building the page from data without ever parsing it as HTML: every value becomes a text
// node or an attribute, so a document name or a step message cannot inject markup.

/**
 * h("a", {href, class: "x"}, "text", child…): an element. Strings and numbers become text
 * nodes; null, undefined and false children and attributes are left out.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

export function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** Replaces the element's content with `children`. */
export function fill(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

/** Sets the text only when it changed: no needless layout, selection kept. */
export function setText(element, text) {
  const value = String(text ?? "");
  if (element.textContent !== value) element.textContent = value;
}

/** A labelled progress bar (role=progressbar), 0 to 100. */
export function progressBar(label) {
  const fillElement = h("div", { class: "bar-fill" });
  const bar = h(
    "div",
    {
      class: "bar",
      role: "progressbar",
      "aria-label": label,
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": 0,
    },
    fillElement,
  );
  return {
    element: bar,
    set(percentage, state) {
      const value = Math.floor(percentage);
      bar.setAttribute("aria-valuenow", String(value));
      bar.setAttribute("aria-valuetext", `${value} %`);
      bar.dataset.state = state ?? "";
      fillElement.style.width = `${percentage}%`;
    },
  };
}

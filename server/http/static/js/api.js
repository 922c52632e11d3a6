// The HTTP API (docs/http.md). The token travels only in the Authorization header.
import { state } from "./state.js";

// The parsed JSON body (null for 204); throws an Error with `code` (the server's, or "offline",
// or "http_<status>") and `status`.
export async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    const error = new Error("network");
    error.code = "offline";
    throw error;
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const detail = (data && data.error) || {};
    const error = new Error(detail.message || response.statusText);
    error.code = detail.code || "http_" + response.status;
    error.status = response.status;
    throw error;
  }
  return data;
}

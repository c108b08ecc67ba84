// Guacamole statuses and ztproxy's end reasons in words, for the on-screen state.

import Guacamole from "./guac";

const Code = Guacamole.Status.Code;

/** Why ztproxy ended a session (`session_ended` on the control channel), in words. */
export function endReason(reason: string): string {
  switch (reason) {
    case "revoked":
      return "The session was ended by the administrator.";
    case "idle_timeout":
      return "The session was idle for too long.";
    case "max_duration":
      return "The session reached its time limit.";
    case "connect_timeout":
      return "The session was not joined in time.";
    case "shutdown":
      return "ztproxy is shutting down.";
    case "recording_failed":
      return "The session could not be recorded, so it was ended.";
    case "target_closed":
      return "The remote computer ended the session.";
    case "client_closed":
      return "The session was closed.";
    default:
      return `The session ended (${reason}).`;
  }
}

/** A Guacamole status as a sentence, with the server's own message when it adds something. */
export function statusText(status: Guacamole.Status): string {
  const headline = ((): string => {
    switch (status.code) {
      case Code.SUCCESS:
        return "The session ended.";
      case Code.SESSION_CLOSED:
        return "The session was ended by the administrator.";
      case Code.SESSION_TIMEOUT:
        return "The session timed out.";
      case Code.SESSION_CONFLICT:
        return "The session was taken over by another connection.";
      case Code.UPSTREAM_TIMEOUT:
        return "The remote computer is not responding.";
      case Code.UPSTREAM_ERROR:
        return "The remote computer reported an error.";
      case Code.UPSTREAM_NOT_FOUND:
        return "The remote computer could not be reached.";
      case Code.UPSTREAM_UNAVAILABLE:
        return "The remote computer is unavailable.";
      case Code.SERVER_BUSY:
        return "ztproxy is busy or shutting down.";
      case Code.CLIENT_UNAUTHORIZED:
      case Code.CLIENT_FORBIDDEN:
        return "Access was refused.";
      case Code.CLIENT_BAD_REQUEST:
        return "The browser sent something ztproxy could not accept.";
      case Code.RESOURCE_NOT_FOUND:
        return "The requested resource does not exist.";
      case Code.RESOURCE_CLOSED:
        return "The requested resource is no longer available.";
      default:
        return "The session ended with an error.";
    }
  })();
  const detail = status.message?.trim();
  return detail && detail !== "Manually closed." ? `${headline} (${detail})` : headline;
}

/// A string a peer sent (a worker name, a reason, a segment or pipe name), made safe for a
/// log line or a summary: control characters (newlines, ANSI escapes), format characters
/// (bidirectional overrides) and backslashes become `\u{…}` / `\\`, and the text is cut
/// at `maximumLength` characters. The one place that decides how peer text is shown.
public func escapedForLog(_ text: String, maximumLength: Int = 200) -> String {
    var escaped = ""
    var count = 0
    for scalar in text.unicodeScalars {
        if count == maximumLength {
            escaped += "…"
            break
        }
        count += 1
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .privateUse, .unassigned:
            escaped += "\\u{" + String(scalar.value, radix: 16) + "}"
        default:
            escaped += scalar == "\\" ? "\\\\" : String(scalar)
        }
    }
    return escaped
}

//! Label and field selectors of list requests (`labelSelector=`, `fieldSelector=`), parsed
//! and matched like apimachinery's `labels.Parse` and `fields.ParseSelector`. [`crate::query`]
//! applies them to the metadata joined into answers.
//!
//! Label selector grammar (apimachinery's): requirements separated by `,` (AND), each one of
//! `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1)`, `key`, `!key`,
//! `key>1`, `key<1` (integer values), with whitespace allowed between tokens. Keys are
//! qualified names (optional DNS-subdomain prefix ≤ 253 bytes, `/`, name ≤ 63 bytes of
//! `[A-Za-z0-9._-]` starting and ending alphanumeric); values are empty or ≤ 63 bytes of the
//! same characters. Input is bounded: more than [`MAX_SELECTOR_LEN`] bytes or
//! [`MAX_REQUIREMENTS`] requirements is an error, not a slow request.
//!
//! Field selectors accept only `metadata.name` and `metadata.namespace` with `=`, `==`, `!=`,
//! as metrics-server registers no other field label for its kinds.

use std::collections::BTreeMap;
use std::fmt;

/// Longest selector string accepted (label or field), in bytes.
pub const MAX_SELECTOR_LEN: usize = 4096;

/// Most requirements (label) or terms (field) one selector may have.
pub const MAX_REQUIREMENTS: usize = 100;

/// Why a selector string was refused. Messages follow apimachinery's wording and add the byte
/// position of the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The selector is longer than [`MAX_SELECTOR_LEN`].
    #[error("selector is {len} bytes long, more than the {MAX_SELECTOR_LEN} allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The selector has more than [`MAX_REQUIREMENTS`] requirements.
    #[error("selector has more than the {MAX_REQUIREMENTS} requirements allowed")]
    TooManyRequirements,
    /// A token appeared where the grammar does not allow it.
    #[error("{}found '{found}' at position {position}, expected: {expected}", context.prefix())]
    Syntax {
        /// Where in the grammar the parser was.
        context: SyntaxContext,
        /// The offending token (empty at the end of the string).
        found: String,
        /// Its byte offset in the selector.
        position: usize,
        /// What the grammar allows there.
        expected: &'static str,
    },
    /// A label key is not a qualified name.
    #[error(
        "unable to parse requirement: invalid label key \"{key}\" at position {position}: {reason}"
    )]
    InvalidKey {
        /// The key.
        key: String,
        /// Its byte offset in the selector.
        position: usize,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A value is not a valid label value, or not an integer for `>`/`<`.
    #[error("unable to parse requirement: invalid value \"{value}\" for key \"{key}\": {reason}")]
    InvalidValue {
        /// The key of the requirement.
        key: String,
        /// The value.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A field selector names a field other than `metadata.name` / `metadata.namespace`.
    #[error(
        "{field:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
    )]
    UnknownField {
        /// The field as written.
        field: String,
    },
    /// A field selector term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldTerm {
        /// The whole selector.
        selector: String,
        /// The term that has no operator.
        term: String,
    },
    /// A field selector value has a bad `\` escape or an unescaped `,`/`=`.
    #[error("invalid field selector: {reason}: {sequence}")]
    FieldValue {
        /// What is wrong.
        reason: &'static str,
        /// The offending characters.
        sequence: String,
    },
}

/// Where a [`SelectorError::Syntax`] was found: inside a requirement (apimachinery prefixes
/// those with `unable to parse requirement: `) or between requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxContext {
    /// While parsing one requirement.
    Requirement,
    /// Between requirements.
    Selector,
}

impl SyntaxContext {
    fn prefix(self) -> &'static str {
        match self {
            SyntaxContext::Requirement => "unable to parse requirement: ",
            SyntaxContext::Selector => "",
        }
    }
}

/// A parsed label selector: the AND of its requirements, kept sorted by key. The empty
/// selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// One requirement of a [`LabelSelector`], validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and deduplicated; exactly one for the exact-match and integer operators, none
    /// for the existence operators, at least one for `in`/`notin`.
    values: Vec<String>,
    /// The parsed value of `>`/`<`.
    bound: i64,
}

/// The operator of a [`Requirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value` (also true when the key is absent)
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)` (also true when the key is absent)
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>n` (integer comparison; false when the label is not an integer)
    GreaterThan,
    /// `key<n` (integer comparison; false when the label is not an integer)
    LessThan,
}

/// A parsed field selector for the Metrics API: the AND of `metadata.name` and
/// `metadata.namespace` equality / inequality terms. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// One term of a [`FieldSelector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    /// Which field.
    pub field: Field,
    /// `!=` rather than `=`/`==`.
    pub negated: bool,
    /// The value, unescaped.
    pub value: String,
}

/// The fields a Metrics API field selector may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `metadata.name`
    Name,
    /// `metadata.namespace` (empty for nodes)
    Namespace,
}

// === impl LabelSelector ===

impl LabelSelector {
    /// Parses the string form; the empty (or all-whitespace) string is the selector that
    /// matches everything.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError::TooLong { len: s.len() });
        }
        let tokens = lex(s);
        let mut parser = Parser {
            tokens: &tokens,
            at: 0,
        };
        let mut requirements = parser.parse_selector()?;
        // Stable, so requirements with the same key keep their written order.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector has no requirement (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical form: requirements sorted by key, joined by `,`, values sorted
    /// (`app=web,tier in (a,b),!legacy`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

// === impl Requirement ===

impl Requirement {
    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted and deduplicated (empty for `key` and `!key`).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether `labels` satisfy this requirement (apimachinery's `Requirement.Matches`).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.is_some_and(|v| self.has_value(v))
            }
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan => value
                .and_then(|v| parse_go_int(v))
                .is_some_and(|n| n > self.bound),
            Operator::LessThan => value
                .and_then(|v| parse_go_int(v))
                .is_some_and(|n| n < self.bound),
        }
    }

    fn has_value(&self, value: &str) -> bool {
        match self.values.as_slice() {
            [only] => only == value,
            many => many.binary_search_by(|v| v.as_str().cmp(value)).is_ok(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            Operator::DoesNotExist => return write!(f, "!{}", self.key),
            Operator::Exists => return f.write_str(&self.key),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
        };
        write!(f, "{}{op}", self.key)?;
        let parenthesised = matches!(self.operator, Operator::In | Operator::NotIn);
        if parenthesised {
            f.write_str("(")?;
        }
        f.write_str(&self.values.join(","))?;
        if parenthesised {
            f.write_str(")")?;
        }
        Ok(())
    }
}

// === impl FieldSelector ===

impl FieldSelector {
    /// Parses the string form (apimachinery's `fields.ParseSelector` grammar: terms split on
    /// unescaped `,`, each `field=value`, `field==value` or `field!=value`, values with `\,`,
    /// `\=` and `\\` escapes), then refuses any field other than `metadata.name` and
    /// `metadata.namespace`.
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError::TooLong { len: s.len() });
        }
        let mut terms = Vec::new();
        // apimachinery sorts the raw terms before parsing them, which decides which error
        // is reported when several terms are bad.
        let mut parts: Vec<&str> = split_field_terms(s).collect();
        parts.sort_unstable();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            if terms.len() == MAX_REQUIREMENTS {
                return Err(SelectorError::TooManyRequirements);
            }
            let (lhs, negated, rhs) =
                split_field_term(part).ok_or_else(|| SelectorError::FieldTerm {
                    selector: s.to_owned(),
                    term: part.to_owned(),
                })?;
            let value = unescape_field_value(rhs)?;
            let field = match lhs {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => {
                    return Err(SelectorError::UnknownField {
                        field: other.to_owned(),
                    });
                }
            };
            terms.push(FieldTerm {
                field,
                negated,
                value,
            });
        }
        terms.sort_by_cached_key(|t| t.to_string());
        Ok(FieldSelector { terms })
    }

    /// Whether an object with this name and namespace (`None` for cluster-scoped objects,
    /// which behave as namespace `""`) satisfies every term.
    pub fn matches(&self, name: &str, namespace: Option<&str>) -> bool {
        self.terms.iter().all(|term| {
            let actual = match term.field {
                Field::Name => name,
                Field::Namespace => namespace.unwrap_or(""),
            };
            (actual == term.value) != term.negated
        })
    }

    /// Whether this selector has no term (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The terms, in canonical order.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// The value an equality term requires of `field`, if any: lets a query narrow to one
    /// namespace or one name before matching.
    pub fn required(&self, field: Field) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical form: `metadata.name=a,metadata.namespace!=b` (terms sorted, `==`
    /// written `=`, values escaped).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{term}")?;
        }
        Ok(())
    }
}

impl fmt::Display for FieldTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = match self.field {
            Field::Name => "metadata.name",
            Field::Namespace => "metadata.namespace",
        };
        let op = if self.negated { "!=" } else { "=" };
        write!(f, "{field}{op}")?;
        for c in self.value.chars() {
            if matches!(c, '\\' | ',' | '=') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

// === label selector lexer and parser (apimachinery's, token for token) ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Identifier,
    In,
    NotIn,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    OpenPar,
    ClosedPar,
    Comma,
    End,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    tok: Tok,
    lit: &'a str,
    position: usize,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the selector into tokens, ending with one [`Tok::End`].
fn lex(s: &str) -> Vec<Token<'_>> {
    let bytes = s.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    loop {
        while at < bytes.len() && is_whitespace(bytes[at]) {
            at += 1;
        }
        if at == bytes.len() {
            tokens.push(Token {
                tok: Tok::End,
                lit: "",
                position: at,
            });
            return tokens;
        }
        let start = at;
        let tok = if is_special(bytes[at]) {
            // Longest match: `!=` and `==` are the only two-byte symbols.
            let two = bytes.get(at + 1) == Some(&b'=');
            let (tok, len) = match (bytes[at], two) {
                (b'!', true) => (Tok::NotEquals, 2),
                (b'=', true) => (Tok::DoubleEquals, 2),
                (b'!', false) => (Tok::Not, 1),
                (b'=', false) => (Tok::Equals, 1),
                (b'(', _) => (Tok::OpenPar, 1),
                (b')', _) => (Tok::ClosedPar, 1),
                (b',', _) => (Tok::Comma, 1),
                (b'>', _) => (Tok::GreaterThan, 1),
                _ => (Tok::LessThan, 1),
            };
            at += len;
            tok
        } else {
            while at < bytes.len() && !is_special(bytes[at]) && !is_whitespace(bytes[at]) {
                at += 1;
            }
            match &s[start..at] {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Identifier,
            }
        };
        tokens.push(Token {
            tok,
            lit: &s[start..at],
            position: start,
        });
    }
}

struct Parser<'t, 's> {
    tokens: &'t [Token<'s>],
    at: usize,
}

/// Token context: in `Values` the keywords `in`/`notin` are plain identifiers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

impl<'s> Parser<'_, 's> {
    fn peek(&self, context: Context) -> Token<'s> {
        let mut token = self.tokens[self.at];
        if context == Context::Values && matches!(token.tok, Tok::In | Tok::NotIn) {
            token.tok = Tok::Identifier;
        }
        token
    }

    fn next(&mut self, context: Context) -> Token<'s> {
        let token = self.peek(context);
        if token.tok != Tok::End {
            self.at += 1;
        }
        token
    }

    fn parse_selector(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let token = self.peek(Context::Values);
            match token.tok {
                Tok::Identifier | Tok::Not => {
                    if requirements.len() == MAX_REQUIREMENTS {
                        return Err(SelectorError::TooManyRequirements);
                    }
                    requirements.push(self.parse_requirement()?);
                    let after = self.next(Context::Values);
                    match after.tok {
                        Tok::End => return Ok(requirements),
                        Tok::Comma => {
                            let following = self.peek(Context::Values);
                            if !matches!(following.tok, Tok::Identifier | Tok::Not) {
                                return Err(syntax(
                                    SyntaxContext::Selector,
                                    following,
                                    "identifier after ','",
                                ));
                            }
                        }
                        _ => {
                            return Err(syntax(
                                SyntaxContext::Selector,
                                after,
                                "',' or 'end of string'",
                            ));
                        }
                    }
                }
                Tok::End => return Ok(requirements),
                _ => {
                    return Err(syntax(
                        SyntaxContext::Selector,
                        token,
                        "!, identifier, or 'end of string'",
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut token = self.next(Context::Values);
        let negated = token.tok == Tok::Not;
        if negated {
            token = self.next(Context::Values);
        }
        if token.tok != Tok::Identifier {
            return Err(syntax(SyntaxContext::Requirement, token, "identifier"));
        }
        let key = token.lit;
        validate_key(key).map_err(|reason| SelectorError::InvalidKey {
            key: key.to_owned(),
            position: token.position,
            reason,
        })?;
        let unary = matches!(self.peek(Context::Values).tok, Tok::End | Tok::Comma);
        if negated || unary {
            let operator = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Ok(Requirement {
                key: key.to_owned(),
                operator,
                values: Vec::new(),
                bound: 0,
            });
        }
        let op_token = self.next(Context::KeyAndOperator);
        let operator = match op_token.tok {
            Tok::In => Operator::In,
            Tok::NotIn => Operator::NotIn,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::NotEquals => Operator::NotEquals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            _ => {
                return Err(syntax(
                    SyntaxContext::Requirement,
                    op_token,
                    "in, notin, =, ==, !=, gt, lt",
                ));
            }
        };
        let mut values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => vec![self.parse_exact_value()?],
        };
        values.sort_unstable();
        values.dedup();
        let mut bound = 0;
        if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
            bound = parse_go_int(&values[0]).ok_or_else(|| SelectorError::InvalidValue {
                key: key.to_owned(),
                value: values[0].clone(),
                reason: "for 'Gt', 'Lt' operators, the value must be an integer",
            })?;
        }
        for value in &values {
            validate_value(value).map_err(|reason| SelectorError::InvalidValue {
                key: key.to_owned(),
                value: value.clone(),
                reason,
            })?;
        }
        Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
            bound,
        })
    }

    /// `( v1, v2 )`, with apimachinery's treatment of empty entries: `()`, `(,a)`, `(a,)` and
    /// `(a,,b)` all contain the empty value.
    fn parse_values(&mut self) -> Result<Vec<String>, SelectorError> {
        let open = self.next(Context::Values);
        if open.tok != Tok::OpenPar {
            return Err(syntax(SyntaxContext::Requirement, open, "'('"));
        }
        let first = self.peek(Context::Values);
        match first.tok {
            Tok::Identifier | Tok::Comma => {
                let values = self.parse_identifiers()?;
                let close = self.next(Context::Values);
                if close.tok != Tok::ClosedPar {
                    return Err(syntax(SyntaxContext::Requirement, close, "')'"));
                }
                Ok(values)
            }
            Tok::ClosedPar => {
                self.next(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(syntax(
                SyntaxContext::Requirement,
                first,
                "',', ')' or identifier",
            )),
        }
    }

    fn parse_identifiers(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut values: Vec<String> = Vec::new();
        loop {
            let token = self.next(Context::Values);
            match token.tok {
                Tok::Identifier => {
                    values.push(token.lit.to_owned());
                    let following = self.peek(Context::Values);
                    match following.tok {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(values),
                        _ => {
                            return Err(syntax(
                                SyntaxContext::Requirement,
                                following,
                                "',' or ')'",
                            ));
                        }
                    }
                }
                Tok::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.peek(Context::Values).tok {
                        Tok::ClosedPar => {
                            values.push(String::new());
                            return Ok(values);
                        }
                        Tok::Comma => values.push(String::new()),
                        _ => {}
                    }
                }
                _ => {
                    return Err(syntax(
                        SyntaxContext::Requirement,
                        token,
                        "',', or identifier",
                    ));
                }
            }
        }
    }

    /// The single value of `=`, `==`, `!=`, `>`, `<`; empty when the requirement ends there.
    fn parse_exact_value(&mut self) -> Result<String, SelectorError> {
        let token = self.peek(Context::Values);
        if matches!(token.tok, Tok::End | Tok::Comma) {
            return Ok(String::new());
        }
        let token = self.next(Context::Values);
        if token.tok == Tok::Identifier {
            return Ok(token.lit.to_owned());
        }
        Err(syntax(SyntaxContext::Requirement, token, "identifier"))
    }
}

fn syntax(context: SyntaxContext, token: Token<'_>, expected: &'static str) -> SelectorError {
    SelectorError::Syntax {
        context,
        found: token.lit.to_owned(),
        position: token.position,
        expected,
    }
}

// === validation (apimachinery's IsQualifiedName / IsValidLabelValue) ===

const NAME_RULE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', \
     and must start and end with an alphanumeric character";

fn validate_key(key: &str) -> Result<(), &'static str> {
    let name = match key.split_once('/') {
        None => key,
        Some((prefix, name)) => {
            if name.contains('/') {
                return Err(
                    "a qualified name must consist of alphanumeric characters, '-', \
                     '_' or '.', with an optional DNS subdomain prefix and '/' \
                     (e.g. 'example.com/MyName')",
                );
            }
            if prefix.is_empty() {
                return Err("prefix part must be non-empty");
            }
            if prefix.len() > 253 {
                return Err("prefix part must be no more than 253 bytes");
            }
            if !is_dns_subdomain(prefix) {
                return Err(
                    "prefix part a lowercase RFC 1123 subdomain must consist of lower \
                     case alphanumeric characters, '-' or '.', and must start and end with an \
                     alphanumeric character",
                );
            }
            name
        }
    };
    if name.is_empty() {
        return Err("name part must be non-empty");
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 bytes");
    }
    if !is_label_token(name) {
        return Err(NAME_RULE);
    }
    Ok(())
}

fn validate_value(value: &str) -> Result<(), &'static str> {
    if value.len() > 63 {
        return Err("must be no more than 63 bytes");
    }
    if !value.is_empty() && !is_label_token(value) {
        return Err(
            "a valid label must be an empty string or consist of alphanumeric \
             characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        );
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_label_token(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`
fn is_dns_subdomain(s: &str) -> bool {
    let lower_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    s.split('.').all(|label| {
        let bytes = label.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                lower_alnum(first)
                    && lower_alnum(last)
                    && bytes.iter().all(|b| lower_alnum(b) || *b == b'-')
            }
            _ => false,
        }
    })
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, decimal digits, no spaces.
fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// === field selector helpers (apimachinery's fields package) ===

/// Splits on `,` not preceded by an escaping `\`.
fn split_field_terms(s: &str) -> impl Iterator<Item = &str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    if !s.is_empty() {
        terms.push(&s[start..]);
    }
    terms.into_iter()
}

/// `(field, negated, raw value)` split at the first `!=`, `==` or `=`.
fn split_field_term(term: &str) -> Option<(&str, bool, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        if let Some(value) = rest.strip_prefix("!=") {
            return Some((&term[..i], true, value));
        }
        if let Some(value) = rest.strip_prefix("==") {
            return Some((&term[..i], false, value));
        }
        if let Some(value) = rest.strip_prefix('=') {
            return Some((&term[..i], false, value));
        }
    }
    None
}

fn unescape_field_value(raw: &str) -> Result<String, SelectorError> {
    let mut value = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::FieldValue {
                    reason: "invalid escape sequence",
                    sequence: format!("\\{c}"),
                });
            }
            value.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' || c == '=' {
            return Err(SelectorError::FieldValue {
                reason: "unescaped character in value",
                sequence: c.to_string(),
            });
        } else {
            value.push(c);
        }
    }
    if escaped {
        return Err(SelectorError::FieldValue {
            reason: "invalid escape sequence",
            sequence: "\\".to_owned(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Parses `selector`, checks its canonical form, and checks it against label sets.
    fn check(selector: &str, canonical: &str, cases: &[(&[(&str, &str)], bool)]) {
        let parsed = LabelSelector::parse(selector)
            .unwrap_or_else(|e| panic!("{selector:?} should parse: {e}"));
        assert_eq!(
            parsed.to_string(),
            canonical,
            "canonical form of {selector:?}"
        );
        for (set, expected) in cases {
            assert_eq!(
                parsed.matches(&labels(set)),
                *expected,
                "{selector:?} against {set:?}"
            );
        }
    }

    fn check_err(selector: &str, expected: &str) {
        match LabelSelector::parse(selector) {
            Ok(s) => panic!("{selector:?} parsed as {s:?}, expected error {expected:?}"),
            Err(e) => assert_eq!(e.to_string(), expected, "error for {selector:?}"),
        }
    }

    #[test]
    fn equality_operators() {
        let web: &[(&str, &str)] = &[("app", "web")];
        let db: &[(&str, &str)] = &[("app", "db")];
        let none: &[(&str, &str)] = &[];
        check(
            "app=web",
            "app=web",
            &[(web, true), (db, false), (none, false)],
        );
        check(
            "app==web",
            "app==web",
            &[(web, true), (db, false), (none, false)],
        );
        check(
            "app!=web",
            "app!=web",
            &[(web, false), (db, true), (none, true)],
        );
        check(
            "app=",
            "app=",
            &[(&[("app", "")], true), (web, false), (none, false)],
        );
        check(" app = web ", "app=web", &[(web, true)]);
    }

    #[test]
    fn set_operators() {
        let a: &[(&str, &str)] = &[("tier", "a")];
        let c: &[(&str, &str)] = &[("tier", "c")];
        let none: &[(&str, &str)] = &[];
        check(
            "tier in (b, a)",
            "tier in (a,b)",
            &[(a, true), (c, false), (none, false)],
        );
        check(
            "tier notin (a,b)",
            "tier notin (a,b)",
            &[(a, false), (c, true), (none, true)],
        );
        check("tier in (a,a)", "tier in (a)", &[(a, true)]);
        check(
            "tier in ()",
            "tier in ()",
            &[(&[("tier", "")], true), (a, false)],
        );
        check(
            "tier in (,a)",
            "tier in (,a)",
            &[(&[("tier", "")], true), (a, true)],
        );
        check("tier in (a,)", "tier in (,a)", &[(c, false)]);
        check("tier in (a,,b)", "tier in (,a,b)", &[(c, false)]);
        check(
            "in in (in,notin)",
            "in in (in,notin)",
            &[(&[("in", "notin")], true)],
        );
    }

    #[test]
    fn existence_and_integer_operators() {
        let has: &[(&str, &str)] = &[("gpu", "true")];
        let none: &[(&str, &str)] = &[];
        check("gpu", "gpu", &[(has, true), (none, false)]);
        check("!gpu", "!gpu", &[(has, false), (none, true)]);
        check("! gpu", "!gpu", &[(has, false)]);
        check(
            "replicas>2",
            "replicas>2",
            &[
                (&[("replicas", "3")], true),
                (&[("replicas", "2")], false),
                (&[("replicas", "x")], false),
                (none, false),
            ],
        );
        check(
            "replicas<2",
            "replicas<2",
            &[
                (&[("replicas", "1")], true),
                (&[("replicas", "-5")], true),
                (none, false),
            ],
        );
    }

    #[test]
    fn conjunctions_sorted_by_key() {
        let set: &[(&str, &str)] = &[("app", "web"), ("env", "prod"), ("example.com/x", "1")];
        check("env=prod,app=web", "app=web,env=prod", &[(set, true)]);
        check("env=prod, app=db", "app=db,env=prod", &[(set, false)]);
        check(
            "example.com/x, !legacy,app in (web)",
            "app in (web),example.com/x,!legacy",
            &[(set, true)],
        );
        check("a=1,a!=2", "a=1,a!=2", &[(&[("a", "1")], true)]);
        check("", "", &[(set, true), (&[], true)]);
        check("  \t", "", &[(set, true)]);
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(!LabelSelector::parse("a").unwrap().is_empty());
    }

    #[test]
    fn syntax_errors_name_the_token_and_position() {
        check_err(
            "(a)",
            "found '(' at position 0, expected: !, identifier, or 'end of string'",
        );
        check_err(
            "a in b",
            "unable to parse requirement: found 'b' at position 5, expected: '('",
        );
        check_err(
            "a b",
            "unable to parse requirement: found 'b' at position 2, expected: in, notin, =, ==, !=, gt, lt",
        );
        check_err(
            "a=b c",
            "found 'c' at position 4, expected: ',' or 'end of string'",
        );
        check_err(
            "a=b,",
            "found '' at position 4, expected: identifier after ','",
        );
        check_err(
            "a=b,,c",
            "found ',' at position 4, expected: identifier after ','",
        );
        check_err(
            "!",
            "unable to parse requirement: found '' at position 1, expected: identifier",
        );
        check_err(
            "a=(",
            "unable to parse requirement: found '(' at position 2, expected: identifier",
        );
        check_err(
            "a in (b c)",
            "unable to parse requirement: found 'c' at position 8, expected: ',' or ')'",
        );
        check_err(
            "a in (b",
            "unable to parse requirement: found '' at position 7, expected: ',' or ')'",
        );
        check_err(
            "a in (=)",
            "unable to parse requirement: found '=' at position 6, expected: ',', ')' or identifier",
        );
        check_err(
            "a in (b,=)",
            "unable to parse requirement: found '=' at position 8, expected: ',', or identifier",
        );
        check_err(
            "!a=b",
            "found '=' at position 2, expected: ',' or 'end of string'",
        );
    }

    #[test]
    fn validation_errors() {
        check_err(
            "a>x",
            "unable to parse requirement: invalid value \"x\" for key \"a\": for 'Gt', 'Lt' operators, the value must be an integer",
        );
        check_err(
            "a>-5",
            "unable to parse requirement: invalid value \"-5\" for key \"a\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        );
        check_err(
            "a>",
            "unable to parse requirement: invalid value \"\" for key \"a\": for 'Gt', 'Lt' operators, the value must be an integer",
        );
        check_err(
            "-a=b",
            "unable to parse requirement: invalid label key \"-a\" at position 0: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        );
        check_err(
            "Example.com/a=b",
            "unable to parse requirement: invalid label key \"Example.com/a\" at position 0: prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        );
        check_err(
            "/a",
            "unable to parse requirement: invalid label key \"/a\" at position 0: prefix part must be non-empty",
        );
        check_err(
            "a/",
            "unable to parse requirement: invalid label key \"a/\" at position 0: name part must be non-empty",
        );
        assert!(matches!(
            LabelSelector::parse("a/b/c"),
            Err(SelectorError::InvalidKey { .. })
        ));
        assert!(matches!(
            LabelSelector::parse("a=b_"),
            Err(SelectorError::InvalidValue { .. })
        ));
        assert!(matches!(
            LabelSelector::parse("a=ü"),
            Err(SelectorError::InvalidValue { .. })
        ));
        let long_name = "x".repeat(64);
        assert!(matches!(
            LabelSelector::parse(&long_name),
            Err(SelectorError::InvalidKey { .. })
        ));
        assert!(LabelSelector::parse(&"x".repeat(63)).is_ok());
        let long_prefix = format!("{}/a", ["abcdefghi"; 26].join("."));
        assert!(long_prefix.len() > 255);
        assert!(matches!(
            LabelSelector::parse(&long_prefix),
            Err(SelectorError::InvalidKey { .. })
        ));
        assert!(LabelSelector::parse(&format!("a={}", "v".repeat(64))).is_err());
        assert!(LabelSelector::parse("MyKey.with-Dots_1=My.Value-1_x").is_ok());
    }

    #[test]
    fn bounds() {
        let long = format!("a={}", "b".repeat(MAX_SELECTOR_LEN));
        assert_eq!(
            LabelSelector::parse(&long),
            Err(SelectorError::TooLong {
                len: MAX_SELECTOR_LEN + 2
            })
        );
        let many: Vec<String> = (0..=MAX_REQUIREMENTS).map(|i| format!("k{i}")).collect();
        assert_eq!(
            LabelSelector::parse(&many.join(",")),
            Err(SelectorError::TooManyRequirements)
        );
        assert!(LabelSelector::parse(&many[..MAX_REQUIREMENTS].join(",")).is_ok());
        let values = vec!["v"; 200].join(",");
        assert!(LabelSelector::parse(&format!("a in ({values})")).is_ok());
        let distinct: Vec<String> = (0..200).map(|i| format!("v{i}")).collect();
        let parsed = LabelSelector::parse(&format!("a in ({})", distinct.join(","))).unwrap();
        assert_eq!(parsed.requirements()[0].values().len(), 200);
        assert!(parsed.matches(&labels(&[("a", "v150")])));
    }

    #[test]
    fn field_selectors() {
        let check_field = |s: &str, canonical: &str, cases: &[(&str, Option<&str>, bool)]| {
            let parsed = FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(parsed.to_string(), canonical);
            for (name, namespace, expected) in cases {
                assert_eq!(
                    parsed.matches(name, *namespace),
                    *expected,
                    "{s:?} on {name} {namespace:?}"
                );
            }
        };
        check_field("", "", &[("a", None, true), ("a", Some("ns"), true)]);
        check_field(
            "metadata.name=web",
            "metadata.name=web",
            &[("web", Some("p"), true), ("db", Some("p"), false)],
        );
        check_field(
            "metadata.name==web",
            "metadata.name=web",
            &[("web", None, true)],
        );
        check_field(
            "metadata.name!=web",
            "metadata.name!=web",
            &[("web", None, false), ("db", None, true)],
        );
        check_field(
            "metadata.namespace=prod,metadata.name=web",
            "metadata.name=web,metadata.namespace=prod",
            &[
                ("web", Some("prod"), true),
                ("web", Some("dev"), false),
                ("web", None, false),
            ],
        );
        // Nodes have no namespace: they behave as namespace "".
        check_field(
            "metadata.namespace=",
            "metadata.namespace=",
            &[("n", None, true), ("n", Some("x"), false)],
        );
        check_field(
            "metadata.namespace!=x",
            "metadata.namespace!=x",
            &[("n", None, true)],
        );
        check_field(
            "metadata.name=a\\,b\\=c\\\\",
            "metadata.name=a\\,b\\=c\\\\",
            &[("a,b=c\\", None, true)],
        );
        check_field("metadata.name=a,,", "metadata.name=a", &[("a", None, true)]);
        let parsed = FieldSelector::parse("metadata.namespace=prod,metadata.name!=x").unwrap();
        assert_eq!(parsed.required(Field::Namespace), Some("prod"));
        assert_eq!(parsed.required(Field::Name), None);
        assert!(FieldSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn field_selector_errors() {
        let err = |s: &str| FieldSelector::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("spec.nodeName=node-a"),
            r#""spec.nodeName" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        assert_eq!(
            err("metadata.name=a,status.phase!=Running"),
            r#""status.phase" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        // Terms are checked in sorted order, as apimachinery does.
        assert_eq!(
            err("zone=a,spec.nodeName=b"),
            r#""spec.nodeName" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        assert_eq!(
            err(" metadata.name=a"),
            r#"" metadata.name" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        assert_eq!(
            err("metadata.name"),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            err("metadata.name=a\\b"),
            "invalid field selector: invalid escape sequence: \\b"
        );
        assert_eq!(
            err("metadata.name=a\\"),
            "invalid field selector: invalid escape sequence: \\"
        );
        assert_eq!(
            err("metadata.name==="),
            "invalid field selector: unescaped character in value: ="
        );
        assert!(matches!(
            FieldSelector::parse(&"x".repeat(MAX_SELECTOR_LEN + 1)),
            Err(SelectorError::TooLong { .. })
        ));
        let many = vec!["metadata.name=a"; MAX_REQUIREMENTS + 1].join(",");
        assert_eq!(
            FieldSelector::parse(&many),
            Err(SelectorError::TooManyRequirements)
        );
    }

    fn key() -> impl Strategy<Value = String> {
        let name = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?";
        let prefix = "([a-z0-9]([-a-z0-9]{0,5}[a-z0-9])?\\.){0,2}[a-z0-9]{1,5}";
        (proptest::option::of(prefix), name).prop_map(|(p, n)| match p {
            Some(p) => format!("{p}/{n}"),
            None => n,
        })
    }

    fn value() -> impl Strategy<Value = String> {
        "(([A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?)|in|notin)?"
    }

    fn requirement() -> impl Strategy<Value = String> {
        (
            key(),
            0..9usize,
            proptest::collection::vec(value(), 1..4),
            0u32..1000,
        )
            .prop_map(|(k, op, values, n)| match op {
                0 => format!("{k}={}", values[0]),
                1 => format!("{k} == {}", values[0]),
                2 => format!("{k}!={}", values[0]),
                3 => format!("{k} in ({})", values.join(",")),
                4 => format!("{k} notin ( {} )", values.join(" , ")),
                5 => k,
                6 => format!("!{k}"),
                7 => format!("{k}>{n}"),
                _ => format!("{k} < {n}"),
            })
    }

    proptest! {
        #[test]
        fn display_parses_back(reqs in proptest::collection::vec(requirement(), 0..6)) {
            let parsed = LabelSelector::parse(&reqs.join(", ")).unwrap();
            let canonical = parsed.to_string();
            prop_assert_eq!(LabelSelector::parse(&canonical).unwrap(), parsed.clone());
            prop_assert_eq!(LabelSelector::parse(&canonical).unwrap().to_string(), canonical);
        }

        #[test]
        fn field_display_parses_back(
            terms in proptest::collection::vec((any::<bool>(), 0..3usize, "[a-z,=\\\\.-]{0,8}"), 0..5)
        ) {
            let mut written = Vec::new();
            for (is_name, op, value) in &terms {
                let field = if *is_name { "metadata.name" } else { "metadata.namespace" };
                let op = ["=", "==", "!="][*op];
                let escaped: String = value.chars().flat_map(|c| {
                    let esc = matches!(c, '\\' | ',' | '=').then_some('\\');
                    esc.into_iter().chain(std::iter::once(c))
                }).collect();
                written.push(format!("{field}{op}{escaped}"));
            }
            let parsed = FieldSelector::parse(&written.join(",")).unwrap();
            prop_assert_eq!(FieldSelector::parse(&parsed.to_string()).unwrap(), parsed);
        }

        #[test]
        fn arbitrary_input_never_panics(s in "[a-z=!(),<> in0-9/.]{0,40}") {
            let _ = LabelSelector::parse(&s);
            let _ = FieldSelector::parse(&s);
        }
    }
}

//! The SMS replies to plain-text commands, in English, French and
//! Portuguese. Pure: no I/O.
//!
//! Rules:
//! - English defaults start with DHIS2's own text where DHIS2 has one (B4,
//!   B5), so a reporter used to DHIS2 recognises them. Where DHIS2 is vague,
//!   the reply adds what was wrong (which code, which value, which period)
//!   and what was stored.
//! - A command's own texts (`wrongFormatMessage`, `defaultMessage`,
//!   `noUserMessage`, `moreThanOneOrgUnitMessage`, `successMessage`) replace
//!   the default sentence in every language; details (missing codes, stored
//!   values) are still added after it. (`receivedMessage`, for alerts, is a
//!   whole reply with no details: send it as it is when set, else
//!   [`ReplyKind::Received`].)
//! - Replies aim at one SMS: at most 160 units (GSM-7 septets, or UTF-16
//!   units once a character outside GSM-7 appears). Lists are cut with
//!   "..." (English) or "…" and long names or values are shortened.
//! - English replies use GSM-7 characters only: codes, values and names
//!   echoed into them are folded (`ç` → `c`, `’` → `'`, anything else
//!   outside GSM-7 → `?`). A command's own texts are used as written.
//!   French and Portuguese replies use their accents (they are sent as UCS-2).
//!
//! Replies that say "Nothing was stored" ([`ReplyKind::UnknownCodes`],
//! [`ReplyKind::InvalidValue`], [`ReplyKind::InvalidDayMonth`],
//! [`ReplyKind::PeriodClosed`], [`ReplyKind::NotAssigned`]) must only be
//! sent when nothing of the SMS was stored: reporters are told to correct
//! the SMS and send it again.

use serde::{Deserialize, Serialize};

use crate::plaintext::PlainTextError;

/// Most units a reply aims at: one SMS.
pub const MAX_REPLY_UNITS: usize = 160;

/// The language of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    En,
    Fr,
    Pt,
}

impl Language {
    /// From a locale such as `fr`, `fr_FR`, `pt-BR`, `PT`; anything else
    /// (or none) gives English.
    pub fn from_locale(locale: Option<&str>) -> Language {
        let Some(locale) = locale else {
            return Language::En;
        };
        let lang = locale
            .trim()
            .split(['_', '-', '.', '@'])
            .next()
            .unwrap_or("");
        if lang.eq_ignore_ascii_case("fr") {
            Language::Fr
        } else if lang.eq_ignore_ascii_case("pt") {
            Language::Pt
        } else {
            Language::En
        }
    }

    /// ISO 639-1 code.
    pub fn code(&self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Fr => "fr",
            Language::Pt => "pt",
        }
    }
}

/// What to tell the reporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyKind {
    /// B2: no command matches the command word. DHIS2: `No command found`.
    NoCommandFound,
    /// B4.1: no code and value found. Custom: `wrongFormatMessage`.
    WrongFormat,
    /// [`ReplyKind::WrongFormat`] with an example of a correct SMS.
    WrongFormatExample { example: String },
    /// More values than the command has codes (positional, compact).
    /// Custom: `wrongFormatMessage`.
    TooManyValues { expected: usize, got: usize },
    /// B4.2: compulsory codes missing. Custom: `defaultMessage`.
    MandatoryMissing(Vec<String>),
    /// B4.3: the sender's user has no organisation unit. Custom: `noUserMessage`.
    NoUser,
    /// B4.4: the sender's user has several organisation units.
    /// Custom: `moreThanOneOrgUnitMessage`.
    MoreThanOneOrgUnit,
    /// B5: no code of the command in the SMS. Custom: `defaultMessage`.
    NoValues { command: String },
    /// Codes the command does not have; nothing was stored.
    UnknownCodes(Vec<String>),
    /// A value that its data element does not accept; nothing was stored.
    /// `reason` should name the value and what is expected (e.g.
    /// "'abc' is not a whole number").
    InvalidValue { code: String, reason: String },
    /// A `ddMM` token that is not a day (`3102`); nothing was stored.
    InvalidDayMonth { token: String },
    /// The period is locked or closed for data entry; nothing was stored.
    PeriodClosed { period: String },
    /// The sender's organisation unit does not report this data set;
    /// nothing was stored.
    NotAssigned { org_unit: String, data_set: String },
    /// B5: values stored, but the completeness rule was not met. DHIS2's
    /// text exactly: `Dataset cannot be marked as completed`. Prefer
    /// [`ReplyKind::StoredNotCompleted`], which also says what was stored.
    NotCompleted,
    /// [`ReplyKind::NotCompleted`] followed by what was stored:
    /// `Dataset cannot be marked as completed. Stored for 202611: a=1`.
    StoredNotCompleted {
        stored: Vec<(String, String)>,
        period: String,
    },
    /// Values stored (code, value); `period` may be empty (events).
    /// Custom: `successMessage`.
    Success {
        stored: Vec<(String, String)>,
        period: String,
    },
    /// Alert and unregistered commands (DHIS2's `receivedMessage` default).
    Received,
    /// A command type this server does not process yet.
    UnsupportedCommandType { parser_type: String },
    /// The number belongs to no user and no command accepts unknown numbers.
    UnknownSender,
    /// Too many SMS from this number in a short time.
    RateLimited,
}

impl ReplyKind {
    /// The reply for a parse error.
    pub fn from_error(error: &PlainTextError) -> ReplyKind {
        match error {
            PlainTextError::NoPairs => ReplyKind::WrongFormat,
            PlainTextError::MissingCompulsory(codes) => ReplyKind::MandatoryMissing(codes.clone()),
            PlainTextError::TooManyValues { expected, got } => ReplyKind::TooManyValues {
                expected: *expected,
                got: *got,
            },
        }
    }
}

/// A command's own reply texts (DHIS2 `/api/smsCommands` fields). Blank
/// texts count as absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CustomTexts<'a> {
    pub wrong_format: Option<&'a str>,
    pub default_message: Option<&'a str>,
    pub no_user: Option<&'a str>,
    pub more_than_one_org_unit: Option<&'a str>,
    pub success: Option<&'a str>,
}

/// Longest code, value or name echoed in a reply, in characters.
const MAX_ITEM: usize = 24;
/// Longest organisation unit or data set name echoed, in characters.
const MAX_NAME: usize = 32;
/// Longest `reason` echoed, in characters.
const MAX_REASON: usize = 48;

/// The reply text for `kind` in `lang`, with the command's own texts
/// replacing the default sentences.
pub fn reply_text(kind: &ReplyKind, lang: Language, custom: &CustomTexts) -> String {
    let w = Writer { lang };
    let own = |t: Option<&str>| {
        t.map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    match kind {
        ReplyKind::NoCommandFound => w.pick(
            "No command found",
            "Aucune commande trouvée",
            "Nenhum comando encontrado",
        ),
        ReplyKind::WrongFormat => own(custom.wrong_format).unwrap_or_else(|| w.wrong_format()),
        ReplyKind::WrongFormatExample { example } => {
            let base = own(custom.wrong_format).unwrap_or_else(|| w.wrong_format());
            let label = w.pick("Example:", "Exemple :", "Exemplo:");
            w.shrink(|max| {
                let example = w.item(example, max * 3);
                sentence(&base, &format!("{label} {example}"))
            })
        }
        ReplyKind::TooManyValues { expected, got } => {
            let detail = match lang {
                Language::En => format!("{got} values sent, only {expected} expected"),
                Language::Fr => format!(
                    "{got} valeur{} envoyée{}, {expected} attendue{}",
                    fr_s(*got),
                    fr_s(*got),
                    fr_s(*expected)
                ),
                Language::Pt => format!(
                    "{got} valor{} enviado{}, {expected} esperado{}",
                    pt_es(*got),
                    pt_s(*got),
                    pt_s(*expected)
                ),
            };
            match own(custom.wrong_format) {
                Some(base) => sentence(&base, &detail),
                None => w.fit(&format!("{}{}{detail}", w.wrong_format(), w.colon())),
            }
        }
        ReplyKind::MandatoryMissing(codes) => {
            let codes = w.items(codes);
            match own(custom.default_message) {
                Some(base) if codes.is_empty() => base,
                Some(base) => {
                    let label = match (lang, codes.len() == 1) {
                        (Language::En, _) => "Missing:",
                        (Language::Fr, true) => "Manquant :",
                        (Language::Fr, false) => "Manquants :",
                        (Language::Pt, true) => "Falta:",
                        (Language::Pt, false) => "Faltam:",
                    };
                    w.list(&sentence(&base, label), " ", &codes, "")
                }
                None => {
                    let one = codes.len() == 1;
                    let head = match lang {
                        Language::En => "Mandatory parameter is missing",
                        Language::Fr if one => "Paramètre obligatoire manquant",
                        Language::Fr => "Paramètres obligatoires manquants",
                        Language::Pt if one => "Falta o parâmetro obrigatório",
                        Language::Pt => "Faltam os parâmetros obrigatórios",
                    };
                    if codes.is_empty() {
                        head.to_string()
                    } else {
                        w.list(head, w.colon(), &codes, "")
                    }
                }
            }
        }
        ReplyKind::NoUser => own(custom.no_user).unwrap_or_else(|| {
            w.pick(
                "No user associated with this phone number. Please contact your supervisor.",
                "Aucun utilisateur n'est associé à ce numéro de téléphone. Veuillez contacter votre superviseur.",
                "Este número de telefone não está associado a nenhuma conta. Por favor, fale com o seu supervisor.",
            )
        }),
        ReplyKind::MoreThanOneOrgUnit => own(custom.more_than_one_org_unit).unwrap_or_else(|| {
            w.pick(
                "Found more than one org unit for this number. Please specify one organisation unit",
                "Plusieurs unités d'organisation trouvées pour ce numéro. Veuillez préciser une unité d'organisation.",
                "Foi encontrada mais de uma unidade organizacional para este número. Por favor, indique uma unidade organizacional.",
            )
        }),
        ReplyKind::NoValues { command } => own(custom.default_message).unwrap_or_else(|| {
            w.shrink(|max| {
                let command = w.item(command, max);
                match lang {
                    Language::En => format!("No values reported for command '{command}'"),
                    Language::Fr => format!("Aucune valeur envoyée pour la commande « {command} »"),
                    Language::Pt => format!("Nenhum valor enviado para o comando \"{command}\""),
                }
            })
        }),
        ReplyKind::UnknownCodes(codes) => {
            let one = codes.len() == 1;
            let (head, tail) = match lang {
                Language::En => (
                    if one { "Unknown code: " } else { "Unknown codes: " },
                    ". Nothing was stored. Check the codes and send again.",
                ),
                Language::Fr => (
                    if one { "Code inconnu : " } else { "Codes inconnus : " },
                    ". Rien n'a été enregistré. Vérifiez les codes et renvoyez le message.",
                ),
                Language::Pt => (
                    if one { "Código desconhecido: " } else { "Códigos desconhecidos: " },
                    ". Nada foi gravado. Verifique os códigos e envie de novo.",
                ),
            };
            w.list(head.trim_end(), " ", &w.items(codes), tail)
        }
        ReplyKind::InvalidValue { code, reason } => w.shrink(|max| {
            let code = w.item(code, max.min(MAX_ITEM));
            let reason = w.item(reason.trim().trim_end_matches('.'), max.min(MAX_REASON));
            let (a, b, c) = match lang {
                Language::En => (
                    "Invalid value for ",
                    ": ",
                    ". Nothing was stored. Correct it and send again.",
                ),
                Language::Fr => (
                    "Valeur invalide pour ",
                    " : ",
                    ". Rien n'a été enregistré. Corrigez-la et renvoyez le message.",
                ),
                Language::Pt => (
                    "Valor inválido para ",
                    ": ",
                    ". Nada foi gravado. Corrija e envie de novo.",
                ),
            };
            format!("{a}{code}{b}{reason}{c}")
        }),
        ReplyKind::InvalidDayMonth { token } => w.shrink(|max| {
            let token = w.item(token, max.min(MAX_ITEM));
            let (a, b) = match lang {
                Language::En => (
                    "Date '",
                    "' is not a valid day. Use ddMM, e.g. 3108 for 31 August. Nothing was stored.",
                ),
                Language::Fr => (
                    "Date « ",
                    " » invalide. Utilisez jjMM, par ex. 3108 pour le 31 août. Rien n'a été enregistré.",
                ),
                Language::Pt => (
                    "Data \"",
                    "\" inválida. Use ddMM, por exemplo 3108 para 31 de agosto. Nada foi gravado.",
                ),
            };
            format!("{a}{token}{b}")
        }),
        ReplyKind::PeriodClosed { period } => w.shrink(|max| {
            let period = w.item(period, max.min(MAX_ITEM));
            let (a, b) = match lang {
                Language::En => (
                    "Period ",
                    " is closed for data entry. Nothing was stored. Please contact your supervisor.",
                ),
                Language::Fr => (
                    "La période ",
                    " est fermée à la saisie. Rien n'a été enregistré. Contactez votre superviseur.",
                ),
                Language::Pt => (
                    "O período ",
                    " está fechado para entrada de dados. Nada foi gravado. Fale com o seu supervisor.",
                ),
            };
            format!("{a}{period}{b}")
        }),
        ReplyKind::NotAssigned { org_unit, data_set } => w.shrink(|max| {
            let ou = w.item(org_unit, max.min(MAX_NAME));
            let ds = w.item(data_set, max.min(MAX_NAME));
            let (a, b, c) = match lang {
                Language::En => (
                    "Organisation unit ",
                    " is not assigned to data set ",
                    ". Nothing was stored. Please contact your supervisor.",
                ),
                Language::Fr => (
                    "L'unité d'organisation ",
                    " n'est pas affectée à l'ensemble de données ",
                    ". Rien n'a été enregistré. Contactez votre superviseur.",
                ),
                Language::Pt => (
                    "A unidade organizacional ",
                    " não está atribuída ao conjunto de dados ",
                    ". Nada foi gravado. Fale com o seu supervisor.",
                ),
            };
            format!("{a}{ou}{b}{ds}{c}")
        }),
        ReplyKind::NotCompleted => w.not_completed(),
        ReplyKind::StoredNotCompleted { stored, period } => {
            w.stored(&w.not_completed(), stored, period)
        }
        ReplyKind::Success { stored, period } => {
            let base = own(custom.success).unwrap_or_else(|| w.processed());
            w.stored(&base, stored, period)
        }
        ReplyKind::Received => w.processed(),
        ReplyKind::UnsupportedCommandType { parser_type } => w.shrink(|max| {
            let t = w.item(parser_type, max);
            let (a, b) = match lang {
                Language::En => (
                    "This server cannot process ",
                    " commands yet. Please contact your supervisor.",
                ),
                Language::Fr => (
                    "Ce serveur ne peut pas encore traiter les commandes de type ",
                    ". Contactez votre superviseur.",
                ),
                Language::Pt => (
                    "Este servidor ainda não pode processar comandos do tipo ",
                    ". Fale com o seu supervisor.",
                ),
            };
            format!("{a}{t}{b}")
        }),
        ReplyKind::UnknownSender => w.pick(
            "This phone number is not registered in the system. Please contact your supervisor.",
            "Ce numéro de téléphone n'est pas enregistré dans le système. Veuillez contacter votre superviseur.",
            "Este número de telefone não é conhecido pelo sistema. Por favor, fale com o seu supervisor.",
        ),
        ReplyKind::RateLimited => w.pick(
            "Too many messages from this number. Wait a few minutes, then send again.",
            "Trop de messages envoyés depuis ce numéro. Attendez quelques minutes, puis renvoyez le message.",
            "Muitas mensagens enviadas deste número. Aguarde alguns minutos e envie de novo.",
        ),
    }
}

fn fr_s(n: usize) -> &'static str {
    if n >= 2 {
        "s"
    } else {
        ""
    }
}

fn pt_s(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn pt_es(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "es"
    }
}

/// `base` followed by `detail`, with a full stop between unless `base`
/// already ends a sentence (or with a colon).
fn sentence(base: &str, detail: &str) -> String {
    let base = base.trim_end();
    if base.ends_with(['.', '!', '?', ':']) {
        format!("{base} {detail}")
    } else {
        format!("{base}. {detail}")
    }
}

struct Writer {
    lang: Language,
}

impl Writer {
    fn pick(&self, en: &str, fr: &str, pt: &str) -> String {
        match self.lang {
            Language::En => en,
            Language::Fr => fr,
            Language::Pt => pt,
        }
        .to_string()
    }

    fn ellipsis(&self) -> &'static str {
        match self.lang {
            Language::En => "...",
            _ => "…",
        }
    }

    /// French puts a space before a colon.
    fn colon(&self) -> &'static str {
        match self.lang {
            Language::Fr => " : ",
            _ => ": ",
        }
    }

    fn wrong_format(&self) -> String {
        self.pick(
            "Wrong command format",
            "Format de commande incorrect",
            "Formato de comando incorreto",
        )
    }

    fn not_completed(&self) -> String {
        self.pick(
            "Dataset cannot be marked as completed",
            "L'ensemble de données ne peut pas être marqué comme complet",
            "O conjunto de dados não pode ser marcado como completo",
        )
    }

    fn processed(&self) -> String {
        self.pick(
            "Command has been processed successfully",
            "Commande traitée avec succès",
            "Comando processado com sucesso",
        )
    }

    /// Text from the sender or the database, made fit for the reply: GSM-7
    /// in English, control characters replaced by spaces, at most `max`
    /// characters.
    fn item(&self, s: &str, max: usize) -> String {
        let cleaned: String = s
            .trim()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let cleaned = match self.lang {
            Language::En => gsm7_fold(&cleaned),
            _ => cleaned,
        };
        if cleaned.chars().count() <= max {
            return cleaned;
        }
        let ellipsis = self.ellipsis();
        let keep = max.saturating_sub(ellipsis.chars().count());
        let mut out: String = cleaned.chars().take(keep).collect();
        out.truncate(out.trim_end().len());
        out.push_str(ellipsis);
        out
    }

    fn items(&self, list: &[String]) -> Vec<String> {
        list.iter()
            .map(|s| self.item(s, MAX_ITEM))
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// `head` + `sep` + items joined by ", " + `tail`, dropping items from
    /// the end (and marking the cut) until the reply fits one SMS.
    fn list(&self, head: &str, sep: &str, items: &[String], tail: &str) -> String {
        let build = |n: usize| {
            let mut s = format!("{head}{sep}{}", items[..n].join(", "));
            if n < items.len() {
                if n > 0 {
                    s.push_str(", ");
                }
                s.push_str(self.ellipsis());
            }
            s.push_str(tail);
            s
        };
        for n in (0..=items.len()).rev() {
            let s = build(n);
            if n == 0 || sms_units(&s) <= MAX_REPLY_UNITS {
                return s;
            }
        }
        unreachable!("n == 0 always returns")
    }

    /// `base`, then what was stored and for which period.
    fn stored(&self, base: &str, stored: &[(String, String)], period: &str) -> String {
        if stored.is_empty() {
            return base.to_string();
        }
        let period = self.item(period, MAX_ITEM);
        let label = match (self.lang, period.is_empty()) {
            (Language::En, true) => "Stored".to_string(),
            (Language::En, false) => format!("Stored for {period}"),
            (Language::Fr, true) => "Données enregistrées".to_string(),
            (Language::Fr, false) => format!("Données enregistrées pour {period}"),
            (Language::Pt, true) => "Dados gravados".to_string(),
            (Language::Pt, false) => format!("Dados gravados para {period}"),
        };
        let pairs: Vec<String> = stored
            .iter()
            .map(|(c, v)| format!("{}={}", self.item(c, MAX_ITEM), self.item(v, MAX_ITEM)))
            .collect();
        self.list(&sentence(base, &label), self.colon(), &pairs, "")
    }

    /// The first of `build(max)`, for `max` (the longest echoed item, in
    /// characters) going down, that fits one SMS; cut at the end otherwise.
    fn shrink(&self, build: impl Fn(usize) -> String) -> String {
        for max in [48, 40, 32, 24, 16, 12, 8] {
            let s = build(max);
            if sms_units(&s) <= MAX_REPLY_UNITS {
                return s;
            }
        }
        self.fit(&build(6))
    }

    /// Shortens a whole reply that is still too long (long custom texts are
    /// left alone by the callers that use this only on defaults).
    fn fit(&self, s: &str) -> String {
        if sms_units(s) <= MAX_REPLY_UNITS {
            return s.to_string();
        }
        let ellipsis = self.ellipsis();
        let mut out = String::new();
        for c in s.chars() {
            let mut next = out.clone();
            next.push(c);
            next.push_str(ellipsis);
            if sms_units(&next) > MAX_REPLY_UNITS {
                break;
            }
            out.push(c);
        }
        out.truncate(out.trim_end().len());
        out.push_str(ellipsis);
        out
    }
}

// ---------------------------------------------------------------------------
// GSM-7

/// GSM 03.38 basic character set (one septet each), escape excluded.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension table (two septets each: escape + character).
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

fn gsm7_septets_of(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Whether every character of `text` is in GSM-7 (basic or extension).
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7_septets_of(c).is_some())
}

/// The length of `text` as an SMS counts it: GSM-7 septets when every
/// character is GSM-7 (extension characters count two), else UTF-16 units
/// (UCS-2). One SMS holds 160 septets or 70 UCS-2 units.
pub fn sms_units(text: &str) -> usize {
    let septets: Option<usize> = text.chars().map(gsm7_septets_of).sum();
    septets.unwrap_or_else(|| text.encode_utf16().count())
}

/// `text` in GSM-7: common accented letters and typographic punctuation
/// folded to the nearest GSM-7 character, anything else replaced by `?`.
pub fn gsm7_fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if gsm7_septets_of(c).is_some() {
            out.push(c);
            continue;
        }
        let folded = match c {
            'á' | 'â' | 'ã' | 'ā' | 'ă' | 'ą' => "a",
            'Á' | 'À' | 'Â' | 'Ã' | 'Ā' | 'Ă' | 'Ą' => "A",
            'ç' | 'ć' | 'č' => "c",
            'Ć' | 'Č' => "C",
            'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
            'È' | 'Ê' | 'Ë' | 'Ē' | 'Ė' | 'Ę' | 'Ě' => "E",
            'í' | 'î' | 'ï' | 'ĩ' | 'ī' => "i",
            'Í' | 'Ì' | 'Î' | 'Ï' | 'Ĩ' | 'Ī' => "I",
            'ó' | 'ô' | 'õ' | 'ō' | 'ő' => "o",
            'Ó' | 'Ò' | 'Ô' | 'Õ' | 'Ō' | 'Ő' => "O",
            'ú' | 'û' | 'ũ' | 'ū' | 'ů' | 'ű' => "u",
            'Ú' | 'Ù' | 'Û' | 'Ũ' | 'Ū' | 'Ů' | 'Ű' => "U",
            'ý' | 'ÿ' => "y",
            'Ý' | 'Ÿ' => "Y",
            'ń' | 'ň' => "n",
            'Ń' | 'Ň' => "N",
            'š' | 'ś' => "s",
            'Š' | 'Ś' => "S",
            'ž' | 'ź' | 'ż' => "z",
            'Ž' | 'Ź' | 'Ż' => "Z",
            'œ' => "oe",
            'Œ' => "OE",
            '‘' | '’' | '‚' | '′' | '`' | '´' => "'",
            '“' | '”' | '„' | '«' | '»' | '″' => "\"",
            '–' | '—' | '‐' | '‑' | '−' => "-",
            '…' => "...",
            '\u{a0}' | '\u{202f}' | '\u{2009}' | '\t' => " ",
            _ => "?",
        };
        out.push_str(folded);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NONE: CustomTexts<'static> = CustomTexts {
        wrong_format: None,
        default_message: None,
        no_user: None,
        more_than_one_org_unit: None,
        success: None,
    };

    const LANGS: [Language; 3] = [Language::En, Language::Fr, Language::Pt];

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn en(kind: &ReplyKind) -> String {
        reply_text(kind, Language::En, &NONE)
    }

    fn all_kinds() -> Vec<ReplyKind> {
        vec![
            ReplyKind::NoCommandFound,
            ReplyKind::WrongFormat,
            ReplyKind::WrongFormatExample {
                example: "anc a=1|b=2".into(),
            },
            ReplyKind::TooManyValues {
                expected: 3,
                got: 5,
            },
            ReplyKind::MandatoryMissing(s(&["b", "c"])),
            ReplyKind::MandatoryMissing(s(&["b"])),
            ReplyKind::MandatoryMissing(vec![]),
            ReplyKind::NoUser,
            ReplyKind::MoreThanOneOrgUnit,
            ReplyKind::NoValues {
                command: "anc".into(),
            },
            ReplyKind::UnknownCodes(s(&["x"])),
            ReplyKind::UnknownCodes(s(&["x", "y"])),
            ReplyKind::InvalidValue {
                code: "b".into(),
                reason: "'abc' is not a whole number".into(),
            },
            ReplyKind::InvalidDayMonth {
                token: "3102".into(),
            },
            ReplyKind::PeriodClosed {
                period: "202611".into(),
            },
            ReplyKind::NotAssigned {
                org_unit: "Ngelehun CHC".into(),
                data_set: "Child Health".into(),
            },
            ReplyKind::StoredNotCompleted {
                stored: pairs(&[("a", "1")]),
                period: "202611".into(),
            },
            ReplyKind::StoredNotCompleted {
                stored: vec![],
                period: String::new(),
            },
            ReplyKind::NotCompleted,
            ReplyKind::Success {
                stored: pairs(&[("a", "1"), ("b", "2")]),
                period: "202611".into(),
            },
            ReplyKind::Success {
                stored: vec![],
                period: String::new(),
            },
            ReplyKind::Received,
            ReplyKind::UnsupportedCommandType {
                parser_type: "TRACKED_ENTITY_REGISTRATION_PARSER".into(),
            },
            ReplyKind::UnknownSender,
            ReplyKind::RateLimited,
        ]
    }

    #[test]
    fn dhis2_english_defaults() {
        assert_eq!(en(&ReplyKind::NoCommandFound), "No command found");
        assert_eq!(en(&ReplyKind::WrongFormat), "Wrong command format");
        assert_eq!(
            en(&ReplyKind::MandatoryMissing(vec![])),
            "Mandatory parameter is missing"
        );
        assert_eq!(
            en(&ReplyKind::NoUser),
            "No user associated with this phone number. Please contact your supervisor."
        );
        assert_eq!(
            en(&ReplyKind::MoreThanOneOrgUnit),
            "Found more than one org unit for this number. Please specify one organisation unit"
        );
        assert_eq!(
            en(&ReplyKind::NoValues {
                command: "anc".into()
            }),
            "No values reported for command 'anc'"
        );
        assert_eq!(
            en(&ReplyKind::NotCompleted),
            "Dataset cannot be marked as completed"
        );
        assert_eq!(
            en(&ReplyKind::StoredNotCompleted {
                stored: vec![],
                period: String::new()
            }),
            "Dataset cannot be marked as completed"
        );
        assert_eq!(
            en(&ReplyKind::Success {
                stored: vec![],
                period: String::new()
            }),
            "Command has been processed successfully"
        );
        assert_eq!(
            en(&ReplyKind::Received),
            "Command has been processed successfully"
        );
    }

    #[test]
    fn precise_english_texts() {
        assert_eq!(
            en(&ReplyKind::Success {
                stored: pairs(&[("a", "1"), ("b", "2")]),
                period: "202611".into()
            }),
            "Command has been processed successfully. Stored for 202611: a=1, b=2"
        );
        assert_eq!(
            en(&ReplyKind::Success {
                stored: pairs(&[("fn", "xmen")]),
                period: String::new()
            }),
            "Command has been processed successfully. Stored: fn=xmen"
        );
        assert_eq!(
            en(&ReplyKind::StoredNotCompleted {
                stored: pairs(&[("a", "1")]),
                period: "2026W36".into()
            }),
            "Dataset cannot be marked as completed. Stored for 2026W36: a=1"
        );
        assert_eq!(
            en(&ReplyKind::MandatoryMissing(s(&["b", "c"]))),
            "Mandatory parameter is missing: b, c"
        );
        assert_eq!(
            en(&ReplyKind::TooManyValues {
                expected: 3,
                got: 5
            }),
            "Wrong command format: 5 values sent, only 3 expected"
        );
        assert_eq!(
            en(&ReplyKind::WrongFormatExample {
                example: "anc a=1|b=2".into()
            }),
            "Wrong command format. Example: anc a=1|b=2"
        );
        assert_eq!(
            en(&ReplyKind::UnknownCodes(s(&["x"]))),
            "Unknown code: x. Nothing was stored. Check the codes and send again."
        );
        assert_eq!(
            en(&ReplyKind::UnknownCodes(s(&["x", "y"]))),
            "Unknown codes: x, y. Nothing was stored. Check the codes and send again."
        );
        assert_eq!(
            en(&ReplyKind::InvalidValue {
                code: "b".into(),
                reason: "'abc' is not a whole number.".into()
            }),
            "Invalid value for b: 'abc' is not a whole number. Nothing was stored. Correct it and send again."
        );
        assert_eq!(
            en(&ReplyKind::PeriodClosed {
                period: "202611".into()
            }),
            "Period 202611 is closed for data entry. Nothing was stored. Please contact your supervisor."
        );
    }

    #[test]
    fn french_and_portuguese() {
        let success = ReplyKind::Success {
            stored: pairs(&[("a", "1"), ("b", "2")]),
            period: "202611".into(),
        };
        assert_eq!(
            reply_text(&success, Language::Fr, &NONE),
            "Commande traitée avec succès. Données enregistrées pour 202611 : a=1, b=2"
        );
        assert_eq!(
            reply_text(&success, Language::Pt, &NONE),
            "Comando processado com sucesso. Dados gravados para 202611: a=1, b=2"
        );
        let missing = ReplyKind::MandatoryMissing(s(&["b"]));
        assert_eq!(
            reply_text(&missing, Language::Fr, &NONE),
            "Paramètre obligatoire manquant : b"
        );
        assert_eq!(
            reply_text(&missing, Language::Pt, &NONE),
            "Falta o parâmetro obrigatório: b"
        );
        let missing = ReplyKind::MandatoryMissing(s(&["b", "c"]));
        assert_eq!(
            reply_text(&missing, Language::Fr, &NONE),
            "Paramètres obligatoires manquants : b, c"
        );
        assert_eq!(
            reply_text(&missing, Language::Pt, &NONE),
            "Faltam os parâmetros obrigatórios: b, c"
        );
        let too_many = ReplyKind::TooManyValues {
            expected: 1,
            got: 2,
        };
        assert_eq!(
            reply_text(&too_many, Language::Fr, &NONE),
            "Format de commande incorrect : 2 valeurs envoyées, 1 attendue"
        );
        assert_eq!(
            reply_text(&too_many, Language::Pt, &NONE),
            "Formato de comando incorreto: 2 valores enviados, 1 esperado"
        );
        assert_eq!(
            reply_text(&ReplyKind::NoCommandFound, Language::Fr, &NONE),
            "Aucune commande trouvée"
        );
        assert_eq!(
            reply_text(
                &ReplyKind::NoValues {
                    command: "anc".into()
                },
                Language::Fr,
                &NONE
            ),
            "Aucune valeur envoyée pour la commande « anc »"
        );
    }

    #[test]
    fn custom_texts_override_in_every_language() {
        let custom = CustomTexts {
            wrong_format: Some("Send: anc a=1|b=2"),
            default_message: Some("Please send all values"),
            no_user: Some("Call 123"),
            more_than_one_org_unit: Some("Call 456"),
            success: Some("Asante!"),
        };
        for lang in LANGS {
            let r = |k: &ReplyKind| reply_text(k, lang, &custom);
            assert_eq!(r(&ReplyKind::WrongFormat), "Send: anc a=1|b=2");
            assert_eq!(r(&ReplyKind::NoUser), "Call 123");
            assert_eq!(r(&ReplyKind::MoreThanOneOrgUnit), "Call 456");
            assert_eq!(
                r(&ReplyKind::NoValues {
                    command: "anc".into()
                }),
                "Please send all values"
            );
            assert_eq!(
                r(&ReplyKind::MandatoryMissing(vec![])),
                "Please send all values"
            );
        }
        let r = |k: &ReplyKind| reply_text(k, Language::En, &custom);
        assert_eq!(
            r(&ReplyKind::MandatoryMissing(s(&["b", "c"]))),
            "Please send all values. Missing: b, c"
        );
        assert_eq!(
            r(&ReplyKind::Success {
                stored: pairs(&[("a", "1")]),
                period: "202611".into()
            }),
            "Asante! Stored for 202611: a=1"
        );
        assert_eq!(
            r(&ReplyKind::TooManyValues {
                expected: 3,
                got: 5
            }),
            "Send: anc a=1|b=2. 5 values sent, only 3 expected"
        );
        assert_eq!(
            reply_text(
                &ReplyKind::Success {
                    stored: pairs(&[("a", "1")]),
                    period: "202611".into()
                },
                Language::Fr,
                &custom
            ),
            "Asante! Données enregistrées pour 202611 : a=1"
        );
        // Blank custom texts count as absent; texts without a command's
        // field keep their default.
        let blank = CustomTexts {
            wrong_format: Some("  "),
            ..NONE
        };
        assert_eq!(
            reply_text(&ReplyKind::WrongFormat, Language::En, &blank),
            "Wrong command format"
        );
        assert_eq!(
            reply_text(&ReplyKind::NoCommandFound, Language::En, &custom),
            "No command found"
        );
    }

    #[test]
    fn languages_from_locales() {
        assert_eq!(Language::from_locale(None), Language::En);
        assert_eq!(Language::from_locale(Some("fr")), Language::Fr);
        assert_eq!(Language::from_locale(Some("fr_FR")), Language::Fr);
        assert_eq!(Language::from_locale(Some("FR-ca")), Language::Fr);
        assert_eq!(Language::from_locale(Some("pt-BR")), Language::Pt);
        assert_eq!(Language::from_locale(Some("pt_MZ")), Language::Pt);
        assert_eq!(Language::from_locale(Some("pt")), Language::Pt);
        assert_eq!(Language::from_locale(Some("en_GB")), Language::En);
        assert_eq!(Language::from_locale(Some("sw")), Language::En);
        assert_eq!(Language::from_locale(Some("")), Language::En);
        assert_eq!(Language::from_locale(Some("french")), Language::En);
        assert_eq!(Language::Pt.code(), "pt");
    }

    #[test]
    fn every_reply_fits_one_sms_and_english_is_gsm7() {
        for lang in LANGS {
            for kind in all_kinds() {
                let text = reply_text(&kind, lang, &NONE);
                assert!(
                    sms_units(&text) <= MAX_REPLY_UNITS,
                    "{lang:?} {kind:?}: {} units: {text}",
                    sms_units(&text)
                );
                assert!(text.chars().count() <= 160, "{text}");
                if lang == Language::En {
                    assert!(is_gsm7(&text), "not GSM-7: {text}");
                }
            }
        }
    }

    #[test]
    fn french_and_portuguese_use_accents() {
        let fr = reply_text(&ReplyKind::UnknownSender, Language::Fr, &NONE);
        assert!(fr.contains("numéro de téléphone n'est pas enregistré"));
        let pt = reply_text(&ReplyKind::MoreThanOneOrgUnit, Language::Pt, &NONE);
        assert!(pt.contains("unidade organizacional para este número"));
    }

    #[test]
    fn long_lists_are_cut() {
        let stored: Vec<(String, String)> = (0..40)
            .map(|i| (format!("code{i}"), format!("{}", i * 1000)))
            .collect();
        let text = en(&ReplyKind::Success {
            stored,
            period: "202611".into(),
        });
        assert!(sms_units(&text) <= 160, "{text}");
        assert!(text.starts_with(
            "Command has been processed successfully. Stored for 202611: code0=0, code1=1000, "
        ));
        assert!(text.ends_with(", ..."), "{text}");
        let codes: Vec<String> = (0..60).map(|i| format!("x{i}")).collect();
        let fr = reply_text(&ReplyKind::UnknownCodes(codes), Language::Fr, &NONE);
        assert!(sms_units(&fr) <= 160, "{fr}");
        assert!(fr.contains(", …. Rien n'a été enregistré."), "{fr}");
        // One enormous value: shortened.
        let text = en(&ReplyKind::Success {
            stored: pairs(&[("note", &"z".repeat(500))]),
            period: "202611".into(),
        });
        assert!(sms_units(&text) <= 160, "{text}");
        assert!(text.ends_with("zzz..."), "{text}");
    }

    #[test]
    fn english_folds_echoed_text_to_gsm7() {
        let text = en(&ReplyKind::NotAssigned {
            org_unit: "Posto de Saúde São João".into(),
            data_set: "Suivi “PCIME” – ç".into(),
        });
        assert!(is_gsm7(&text), "{text}");
        assert!(text.contains("Posto de Saude Sao Joao"), "{text}");
        assert!(text.contains("Suivi \"PCIME\" - c"), "{text}");
        let text = en(&ReplyKind::UnknownCodes(s(&["ábç", "数"])));
        assert_eq!(
            text,
            "Unknown codes: abc, ?. Nothing was stored. Check the codes and send again."
        );
        // French keeps the text as sent.
        let fr = reply_text(&ReplyKind::UnknownCodes(s(&["ábç"])), Language::Fr, &NONE);
        assert!(fr.starts_with("Code inconnu : ábç."));
    }

    #[test]
    fn sms_units_count() {
        assert_eq!(sms_units("abc"), 3);
        assert_eq!(sms_units("a|b"), 4);
        assert_eq!(sms_units("€"), 2);
        assert_eq!(sms_units("é"), 1);
        assert_eq!(sms_units("ç"), 1);
        assert_eq!(sms_units("ça|"), 3);
        assert!(is_gsm7("Ç"));
        assert!(!is_gsm7("ç"));
        assert_eq!(gsm7_fold("Ação — ok…"), "Acao - ok...");
    }

    #[test]
    fn from_parse_errors() {
        assert_eq!(
            ReplyKind::from_error(&PlainTextError::NoPairs),
            ReplyKind::WrongFormat
        );
        assert_eq!(
            ReplyKind::from_error(&PlainTextError::MissingCompulsory(s(&["a"]))),
            ReplyKind::MandatoryMissing(s(&["a"]))
        );
        assert_eq!(
            ReplyKind::from_error(&PlainTextError::TooManyValues {
                expected: 1,
                got: 2
            }),
            ReplyKind::TooManyValues {
                expected: 1,
                got: 2
            }
        );
    }

    proptest! {
        #[test]
        fn replies_never_panic_and_stay_short(
            a in "\\PC{0,200}",
            b in "\\PC{0,200}",
            n in 0usize..50,
            lang in prop::sample::select(LANGS.to_vec()),
        ) {
            let list: Vec<String> = (0..n).map(|i| format!("{a}{i}")).collect();
            let stored: Vec<(String, String)> =
                (0..n).map(|i| (format!("{b}{i}"), a.clone())).collect();
            let kinds = vec![
                ReplyKind::MandatoryMissing(list.clone()),
                ReplyKind::UnknownCodes(list),
                ReplyKind::Success { stored: stored.clone(), period: b.clone() },
                ReplyKind::StoredNotCompleted { stored, period: a.clone() },
                ReplyKind::InvalidValue { code: a.clone(), reason: b.clone() },
                ReplyKind::InvalidDayMonth { token: a.clone() },
                ReplyKind::PeriodClosed { period: b.clone() },
                ReplyKind::NotAssigned { org_unit: a.clone(), data_set: b.clone() },
                ReplyKind::NoValues { command: a.clone() },
                ReplyKind::WrongFormatExample { example: b.clone() },
                ReplyKind::UnsupportedCommandType { parser_type: a.clone() },
            ];
            for kind in &kinds {
                let text = reply_text(kind, lang, &NONE);
                prop_assert!(sms_units(&text) <= MAX_REPLY_UNITS, "{} units: {}", sms_units(&text), text);
                if lang == Language::En {
                    prop_assert!(is_gsm7(&text), "{}", text);
                }
            }
        }
    }
}

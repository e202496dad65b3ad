//! A resource named by name or ARN, as the `kinesis` and `firehose` nodes take it, and the
//! region its ARN names weighed against the node's `region`.

/// A kind of named resource, as its messages spell it.
#[derive(Debug, Clone, Copy)]
pub struct ResourceKind {
    /// The ARN's service, e.g. `kinesis`.
    pub service: &'static str,
    /// The ARN's resource type, before `/NAME`, e.g. `stream`.
    pub resource: &'static str,
    /// What an ARN of this kind is called, e.g. `Kinesis stream ARN`.
    pub arn_is: &'static str,
    /// What a name of this kind is called, e.g. `stream name`.
    pub name_is: &'static str,
    /// The longest name the service accepts.
    pub max_name: usize,
}

/// A resource as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    /// The ARN, when it was given as one.
    pub arn: Option<String>,
    /// The region the ARN names.
    pub region: Option<String>,
}

impl ResourceKind {
    /// Parses `NAME` or `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE/NAME`; an error says what
    /// was expected.
    pub fn parse(&self, text: &str) -> Result<Named, String> {
        let text = text.trim();
        let valid = |n: &str| {
            (1..=self.max_name).contains(&n.len())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        };
        if let Some(rest) = text.strip_prefix("arn:") {
            // partition:service:region:account:resource/name
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let ok = parts.len() == 5 && parts[1] == self.service && !parts[2].is_empty();
            let name = parts
                .get(4)
                .and_then(|r| r.strip_prefix(self.resource))
                .and_then(|r| r.strip_prefix('/'))
                .filter(|n| ok && valid(n))
                .ok_or_else(|| {
                    format!(
                        "{text:?} is not a {} (arn:aws:{}:REGION:ACCOUNT:{}/NAME)",
                        self.arn_is, self.service, self.resource
                    )
                })?;
            return Ok(Named {
                name: name.to_string(),
                arn: Some(text.to_string()),
                region: Some(parts[2].to_string()),
            });
        }
        if !valid(text) {
            return Err(format!(
                "{text:?} is not a {} (1 to {} of a-z, A-Z, 0-9, _ . -) or ARN",
                self.name_is, self.max_name
            ));
        }
        Ok(Named {
            name: text.to_string(),
            arn: None,
            region: None,
        })
    }
}

/// The region to use: the node's `setting`, or else the one an ARN names; an error when the two
/// disagree. `whose_arn` names the ARN in that error, e.g. `the ARN of stream "orders"`.
pub fn region<'a>(
    setting: Option<&'a str>,
    arn_region: Option<&'a str>,
    whose_arn: impl FnOnce() -> String,
) -> Result<Option<&'a str>, String> {
    match (setting, arn_region) {
        (Some(s), Some(a)) if s != a => Err(format!(
            "{} names region {a}, the node's region is {s}",
            whose_arn()
        )),
        (Some(s), _) => Ok(Some(s)),
        (None, a) => Ok(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: ResourceKind = ResourceKind {
        service: "firehose",
        resource: "deliverystream",
        arn_is: "Firehose ARN",
        name_is: "delivery stream name",
        max_name: 64,
    };

    #[test]
    fn names_and_arns_parse_and_bad_ones_say_what_was_expected() {
        assert_eq!(
            KIND.parse(" orders ").unwrap(),
            Named {
                name: "orders".into(),
                arn: None,
                region: None
            }
        );
        let arn = "arn:aws:firehose:eu-west-1:123456789012:deliverystream/orders";
        let n = KIND.parse(arn).unwrap();
        assert_eq!(
            (n.name.as_str(), n.region.as_deref()),
            ("orders", Some("eu-west-1"))
        );
        assert_eq!(n.arn.as_deref(), Some(arn));
        let e = KIND
            .parse("arn:aws:kinesis:eu-west-1:1:deliverystream/orders")
            .unwrap_err();
        assert!(
            e.contains(
                "is not a Firehose ARN (arn:aws:firehose:REGION:ACCOUNT:deliverystream/NAME)"
            ),
            "{e}"
        );
        let e = KIND
            .parse("arn:aws:firehose:eu-west-1:1:deliverystreamx/orders")
            .unwrap_err();
        assert!(e.contains("is not a Firehose ARN"), "{e}");
        assert!(KIND.parse("arn:aws:firehose").is_err());
        let e = KIND.parse(&"a".repeat(65)).unwrap_err();
        assert!(
            e.ends_with("is not a delivery stream name (1 to 64 of a-z, A-Z, 0-9, _ . -) or ARN"),
            "{e}"
        );
        assert!(KIND.parse("has space").is_err());
    }

    #[test]
    fn the_setting_wins_unless_the_arn_disagrees() {
        let whose = || "the ARN".to_string();
        assert_eq!(region(None, Some("a-1"), whose), Ok(Some("a-1")));
        assert_eq!(region(Some("a-1"), None, whose), Ok(Some("a-1")));
        assert_eq!(region(Some("a-1"), Some("a-1"), whose), Ok(Some("a-1")));
        assert_eq!(region(None, None, whose), Ok(None));
        assert_eq!(
            region(Some("a-1"), Some("b-2"), whose),
            Err("the ARN names region b-2, the node's region is a-1".to_string())
        );
    }
}

//! The OpenAPI schema of an allowlist entry, precise enough that whatever a generator makes
//! from it the domain's `AllowedIps` takes: addresses by `format`, blocks by patterns built
//! here, one alternative per prefix length, that admit only blocks with no host bits set.

use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

/// The component's name in the document.
pub(crate) const NAME: &str = "AllowedIpEntry";

const DESCRIPTION: &str = "An IPv4 or IPv6 address (`203.0.113.7`, `2001:db8::1`) or a CIDR block written as its \
    network address, with no host bits set (`10.0.0.0/8`, not `10.1.2.3/8`). The IPv6 block pattern gives a \
    block's usual spelling: its groups up to the prefix, then `::` or zero groups (`2001:db8::/32`, \
    `2001:db8:0:ff00::/56`); any other standard spelling of a block with no host bits set (`::` among the \
    leading groups, a dotted IPv4 tail, such as the API itself shows some blocks in) is accepted as well.";

/// `AllowedIpEntry`: an IPv4 address, an IPv6 address, an IPv4 block or an IPv6 block.
pub(crate) fn entry() -> Schema {
    let address =
        |format| ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(format)));
    let block = |pattern: String| ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern));
    AnyOfBuilder::new()
        .item(address(KnownFormat::Ipv4))
        .item(address(KnownFormat::Ipv6))
        .item(block(ipv4_block_pattern()))
        .item(block(ipv6_block_pattern()))
        .description(Some(DESCRIPTION))
        .examples([serde_json::json!("203.0.113.7"), serde_json::json!("2001:db8::/32")])
        .build()
        .into()
}

/// Decimal octet, no leading zero (as the parser requires).
const OCTET: &str = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";

/// The values of a field of `width` bits whose top `kept` bits are free and the rest zero.
fn multiples(width: u32, kept: u32) -> impl Iterator<Item = u32> {
    (0..1u32 << kept).map(move |v| v << (width - kept))
}

/// `a.b.c.d/p` with the bits after `p` zero, for every `p` in 0..=32.
pub(crate) fn ipv4_block_pattern() -> String {
    let alternatives = (0..=32u32).map(|prefix| {
        let (free, kept) = (prefix / 8, prefix % 8);
        let mut text = format!(r"({OCTET}\.){{{free}}}");
        if free == 4 {
            // All four octets free: drop the last dot.
            text = format!(r"({OCTET}\.){{3}}{OCTET}");
        } else {
            let values: Vec<String> = multiples(8, kept).map(|v| v.to_string()).collect();
            text.push_str(&format!("({})", values.join("|")));
            text.push_str(&format!(r"(\.0){{{}}}", 3 - free));
        }
        format!("{text}/{prefix}")
    });
    format!("^({})$", alternatives.collect::<Vec<_>>().join("|"))
}

const HEX: &str = "[0-9A-Fa-f]";
/// A group of zero bits: `0` to `0000`.
const ZERO_GROUP: &str = "0{1,4}";

/// One hex group (1 to 4 digits, leading zeros optional) whose top `kept` of 16 bits are free.
fn masked_group(kept: u32) -> String {
    let digit = |index: u32| -> String {
        let free = kept.saturating_sub(4 * index).min(4);
        match free {
            0 => "0".to_owned(),
            4 => HEX.to_owned(),
            _ => {
                let mut set: String = multiples(4, free).map(|v| format!("{v:x}")).collect();
                set.push_str(&set.chars().filter(char::is_ascii_alphabetic).collect::<String>().to_uppercase());
                format!("[{set}]")
            }
        }
    };
    // Written with 4 digits or fewer, the omitted leading digits being zeros.
    let spellings: Vec<String> = (0..4).map(|skip| (skip..4).map(digit).collect()).collect();
    format!("({})", spellings.join("|"))
}

/// Prefix lengths `from..=to` as an alternation.
fn lengths(from: u32, to: u32) -> String {
    (from..=to).map(|p| p.to_string()).collect::<Vec<_>>().join("|")
}

/// An IPv6 block with no host bits set, for every prefix length: the groups before the one
/// the prefix ends in, any; that group, masked; the rest zero, spelt out or as `::`; or `::`
/// right after some of the leading groups.
pub(crate) fn ipv6_block_pattern() -> String {
    let group = format!("{HEX}{{1,4}}");
    let mut alternatives = Vec::new();
    for free in 0..=8u32 {
        let (first, last) = (16 * free, (16 * free + 15).min(128));
        // `::` after `i` leading groups (`i` ≤ `free`, at most 7): every group it stands for is zero.
        let leading = match free.min(7) {
            0 => "::".to_owned(),
            most => format!("(::|({group}:){{1,{most}}}:)"),
        };
        alternatives.push(format!("{leading}/({})", lengths(first, last)));
        if free == 8 {
            alternatives.push(format!("({group}:){{7}}{group}/128"));
            break;
        }
        // The groups spelt out up to the masked one, then zeros to the end or `::`.
        let zeros_after = 7 - free;
        let tail = match zeros_after {
            0 => String::new(),
            n => format!("((:{ZERO_GROUP}){{0,{}}}::|(:{ZERO_GROUP}){{{n}}})", n - 1),
        };
        let by_length: Vec<String> =
            (0..16).map(|kept| format!("{}{tail}/{}", masked_group(kept), first + kept)).collect();
        alternatives.push(format!("({group}:){{{free}}}({})", by_length.join("|")));
    }
    format!("^({})$", alternatives.join("|"))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use account_domain::AllowedIps;
    use ipnet::{Ipv4Net, Ipv6Net};
    use regex::Regex;

    use super::*;

    /// Deterministic spread of bit patterns (splitmix64), so each prefix is tried on many.
    fn patterns(count: usize) -> impl Iterator<Item = u128> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..count).map(move |_| (u128::from(next()) << 64) | u128::from(next()))
    }

    fn accepted(text: &str) -> bool {
        AllowedIps::parse(&[text]).is_ok_and(|list| list.is_some())
    }

    #[test]
    fn the_ipv4_block_pattern_takes_exactly_the_blocks_with_no_host_bits_set() {
        let pattern = Regex::new(&ipv4_block_pattern()).expect("compiles");
        for prefix in 0..=32u8 {
            for bits in patterns(200) {
                let address = Ipv4Addr::from(u32::try_from(bits >> 96).expect("32 bits"));
                let block = Ipv4Net::new(address, prefix).expect("prefix").trunc();
                let text = format!("{}/{prefix}", block.addr());
                assert!(pattern.is_match(&text) && accepted(&text), "{text}");
                let loose = format!("{address}/{prefix}");
                if block.addr() != address {
                    assert!(!pattern.is_match(&loose) && !accepted(&loose), "{loose}");
                }
            }
        }
        for other in ["10.0.0.0/33", "10.0.0.0", "010.0.0.0/8", "10.0.0/8", "256.0.0.0/8", "10.0.0.0/08", "a4B:"] {
            assert!(!pattern.is_match(other), "{other}");
        }
    }

    /// A block's groups up to its prefix spelt out (in varied case and padding), then `::`.
    fn usual_spellings(block: &Ipv6Net) -> Vec<String> {
        let groups = block.addr().segments();
        let needed = usize::from(block.prefix_len()).div_ceil(16);
        let head = |upper: bool, padded: bool| -> Vec<String> {
            groups[..needed]
                .iter()
                .map(|g| match (upper, padded) {
                    (true, true) => format!("{g:04X}"),
                    (true, false) => format!("{g:X}"),
                    (false, true) => format!("{g:04x}"),
                    (false, false) => format!("{g:x}"),
                })
                .collect()
        };
        let mut spellings = Vec::new();
        for (upper, padded) in [(false, false), (true, true), (false, true)] {
            let head = head(upper, padded).join(":");
            if needed < 8 {
                spellings.push(format!("{head}::/{}", block.prefix_len()));
                let zeros = vec!["0"; 8 - needed].join(":");
                let full = if head.is_empty() { zeros } else { format!("{head}:{zeros}") };
                spellings.push(format!("{full}/{}", block.prefix_len()));
            } else {
                spellings.push(format!("{head}/128"));
            }
        }
        spellings
    }

    #[test]
    fn the_ipv6_block_pattern_takes_usual_spellings_of_blocks_with_no_host_bits_set_only() {
        let pattern = Regex::new(&ipv6_block_pattern()).expect("compiles");
        for prefix in 0..=128u8 {
            for bits in patterns(40) {
                let address = Ipv6Addr::from(bits);
                let block = Ipv6Net::new(address, prefix).expect("prefix").trunc();
                for text in usual_spellings(&block) {
                    assert!(pattern.is_match(&text), "{text} is a block's usual spelling");
                    assert!(accepted(&text), "{text} is accepted");
                }
                if block.addr() != address {
                    let loose = format!("{address}/{prefix}");
                    assert!(!pattern.is_match(&loose) && !accepted(&loose), "{loose} has host bits set");
                }
            }
        }
        for other in ["::", "::/129", "2001:db8::", "2001:db8::1::/64", "2001:db8::/032", "g::/16", "a4B:", "::1/64"] {
            assert!(!pattern.is_match(other), "{other}");
        }
        for early in ["::/0", "::/128", "2001::/16", "2001::/128", "1:2:3:4:5:6:7::/112", "2001:db8::/64"] {
            assert!(pattern.is_match(early) && accepted(early), "{early}");
        }
    }
}

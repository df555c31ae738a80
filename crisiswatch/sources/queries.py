"""Search queries for the APIs, built from the brands' terms (the same terms attribution uses)."""

from __future__ import annotations

from crisiswatch.config import Brand


def _quoted(term: str) -> str:
    term = term.replace('"', " ").strip()
    return f'"{term}"' if " " in term else term


def reddit_query(brand: Brand) -> str:
    """Reddit search: any of the brand's words, phrases, tags or account names, minus exclusions
    (Reddit's search has no hashtags or handles, so their bare words are searched)."""
    terms = [*brand.keywords, *(t.lstrip("#") for t in brand.hashtags)]
    terms += [h.lstrip("@") for h in brand.handles]
    query = " OR ".join(dict.fromkeys(_quoted(t) for t in terms if t.strip()))
    for exclusion in brand.exclusions:
        query += f" NOT {_quoted(exclusion)}"
    return query


def x_query(brand: Brand, *, retweets: bool = False) -> str:
    """X recent search / filtered stream rule for a brand."""
    terms = [*brand.keywords, *brand.hashtags, *brand.handles]
    query = "(" + " OR ".join(dict.fromkeys(_quoted(t) for t in terms if t.strip())) + ")"
    for exclusion in brand.exclusions:
        query += f" -{_quoted(exclusion)}"
    if not retweets:
        query += " -is:retweet"
    if len(brand.languages) == 1:
        query += f" lang:{brand.languages[0]}"
    elif brand.languages:
        query += " (" + " OR ".join(f"lang:{lang}" for lang in brand.languages) + ")"
    return query

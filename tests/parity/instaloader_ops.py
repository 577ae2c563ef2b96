"""Runs Instaloader 4.16, unchanged, against the simulator, one crawl operation at a time, for
the protocol parity test (tests/parity.rs).

Usage: python instaloader_ops.py BASE_URL [USERNAME PASSWORD]

It logs in when given an account, then reads one operation per line on stdin, as JSON
{"kind": "<trawl job kind>", "target": "<target>"}, does with Instaloader what Trawl's crawler of
that kind does (fetch every item of the target), and answers one JSON line on stdout:
{"items": N} or {"error": "..."}. One process serves every operation, as one Trawl worker does,
so per-session caches (the start page's tokens) are spent once on both sides.

The only change to Instaloader's behaviour is where its requests go (the simulator's test
driver's `to_simulator`: Instagram's two hosts rewritten to BASE_URL, over plain http).
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "../../simulator/tests/instaloader"))

import instaloader  # noqa: E402
import to_simulator  # noqa: E402
from instaloader import Post, Profile  # noqa: E402

to_simulator.redirect(sys.argv[1])


def profile(L, name):
    p = Profile.from_username(L.context, name)
    # The fields Trawl stores of a profile.
    _ = (p.userid, p.full_name, p.biography, p.is_private, p.is_verified,
         p.followers, p.followees, p.mediacount)
    return 1


def profile_posts(L, name):
    p = Profile.from_username(L.context, name)
    n = 0
    for post in p.get_posts():
        # What the listing carries (Trawl stores those). Not `post.comments`: for a post in the
        # mobile shape (the logged-in listing) that property asks for the whole post again, one
        # request per post, although the listing's node holds `comment_count`.
        _ = (post.mediaid, post.shortcode, post.owner_id, post.date_utc, post.typename,
             post.caption, post.likes)
        n += 1
    return n


def post(L, code):
    p = Post.from_shortcode(L.context, code)
    _ = (p.mediaid, p.owner_id, p.date_utc, p.typename, p.caption, p.likes, p.comments)
    return 1


def post_comments(L, code):
    p = Post.from_shortcode(L.context, code)
    n = 0
    for comment in p.get_comments():
        n += 1 + sum(1 for _ in comment.answers)
    return n


def follows(getter):
    def crawl(L, name):
        p = Profile.from_username(L.context, name)
        return sum(1 for f in getter(p) if f.username)
    return crawl


def hashtag_posts(L, tag):
    # Instaloader.get_hashtag_posts: the hashtag first, then its posts.
    return sum(1 for post in L.get_hashtag_posts(tag) if post.shortcode)


def stories(L, name):
    p = Profile.from_username(L.context, name)
    return sum(1 for story in L.get_stories(userids=[p.userid])
               for item in story.get_items() if item.mediaid)


def highlights(L, name):
    p = Profile.from_username(L.context, name)
    return sum(1 for h in L.get_highlights(p) for item in h.get_items() if item.mediaid)


OPERATIONS = {
    "profile": profile,
    "profile_posts": profile_posts,
    "post": post,
    "post_comments": post_comments,
    "followers": follows(Profile.get_followers),
    "followees": follows(Profile.get_followees),
    "hashtag_posts": hashtag_posts,
    "stories": stories,
    "highlights": highlights,
}


def main():
    L = instaloader.Instaloader(sleep=False, quiet=True, max_connection_attempts=1,
                                download_pictures=False, download_videos=False,
                                save_metadata=False)
    if len(sys.argv) == 4:
        L.login(sys.argv[2], sys.argv[3])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        op = json.loads(line)
        try:
            items = OPERATIONS[op["kind"]](L, op["target"])
            print(json.dumps({"items": items}), flush=True)
        except Exception as err:  # the test prints it; any failure fails the comparison
            print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)


if __name__ == "__main__":
    main()

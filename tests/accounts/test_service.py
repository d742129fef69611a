from civicgrid.accounts import service
from civicgrid.accounts.permissions import Role
from civicgrid.core import audit
from tests.factories import PASSWORD, make_tree, make_users


def test_tree_users_and_scope(session):
    t = make_users(session, make_tree(session))
    session.commit()
    dispatcher = service.actor_for_user(session, t.users["dispatcher"])
    names = {u.username for u in service.list_users(session, dispatcher)}
    assert "grid_worker" in names and "admin" not in names
    assert audit.verify(session) == []
    res = service.authenticate(session, "dispatcher", PASSWORD)
    assert res.user is not None
    assert service.authenticate(session, "dispatcher", "nope").user is None
    assert t.users["admin"].memberships[0].role == Role.admin
